"""Offline sample-quality metrics (FID, KID, precision/recall, class coverage) on MNIST."""
