"""Training one fold of one backbone: models, augmentations, the step, the epoch loop, the time budget."""
