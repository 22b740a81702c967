"""The pipeline's stages, one module per dvc.yaml stage and named like it; each is a leaf that imports shared modules only."""
