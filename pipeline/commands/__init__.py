"""Commands run by hand, outside `dvc repro`."""
