"""Denoising: the classical baselines a diffusion denoiser is measured against, and the scores."""
