"""Where tensors live: device choice and data-parallel training."""
