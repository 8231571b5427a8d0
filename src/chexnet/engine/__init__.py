"""Running networks: precision, transforms, loaders, the training loop and inference."""
