"""ddpm: a Hydra-configured experiment platform for denoising diffusion models."""

__version__ = "0.1.0"
