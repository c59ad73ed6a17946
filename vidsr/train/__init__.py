"""Training: data, trainer, losses, degradations."""
