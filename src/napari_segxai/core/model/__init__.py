"""The model: its card, architectures (one file per family), weights, device, preprocessing and inference."""
