"""Bundled, project-trained weights (safetensors) and their model cards; installed as `vidsr.weights`."""
