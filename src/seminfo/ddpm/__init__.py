"""Class-conditional DDPM: image data, the ε-prediction UNet, pickle-free checkpoints and the training loop."""
