"""The pipeline's stages: one module per dvc.yaml stage, named like it, each a leaf importing shared modules only."""
