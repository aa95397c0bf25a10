"""A trained run on disk: checkpoints, logs and trackers, pictures, and loading it back."""
