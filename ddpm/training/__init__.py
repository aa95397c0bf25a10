"""Training: the settings (``trainer`` group), what a checkpoint holds, one step, the loop."""
