"""A Kaggle image-competition pipeline: prepare → folds → train (K-fold × backbones) → OOF → ensemble → submission."""
