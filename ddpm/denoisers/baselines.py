"""The denoisers a user already trusts, and the scores to compare against them.

Every image is in the model range [-1, 1], shape (N, C, H, W); the classical denoisers work on
[0, 1] pixels (x + 1)/2, where the noise std is half the model-range std. Each baseline takes
its strength from a small grid (``conf/denoise.yaml``) and keeps the value with the best mean
PSNR on the images at hand (an oracle choice, which flatters the baselines): BM3D (Dabov et
al. 2007, the ``bm3d`` package) over multiples of the true noise std, and scikit-image's
non-local means, total variation (Chambolle) and wavelet shrinkage (BayesShrink), plus a
Gaussian blur.

BM3D is run once on a mosaic of all the images side by side (a page of digits): on a 28x28
image its fixed cost dominates (over a second each), while its block matching works the same
on the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from ddpm.runs.viz import to_unit

Denoiser = Callable[[Tensor, float, float], Tensor]  # (noisy, noise std, strength) -> images


def psnr(images: Tensor, clean: Tensor) -> Tensor:
    """Per-image PSNR in dB on [0, 1] pixels (both mapped by (x + 1)/2, clamped)."""
    mse = (to_unit(images) - to_unit(clean)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp(min=1e-12))


def ssim(images: Tensor, clean: Tensor) -> Tensor:
    """Per-image SSIM (Wang et al. 2004, scikit-image's, 7x7 windows) on [0, 1] pixels."""
    from skimage.metrics import structural_similarity

    a, b = _numpy(images), _numpy(clean)
    scores = [
        structural_similarity(x, y, data_range=1.0, channel_axis=0)
        for x, y in zip(a, b, strict=True)
    ]
    return torch.tensor(scores, dtype=torch.float32)


def _numpy(images: Tensor) -> np.ndarray:
    return to_unit(images).cpu().double().numpy()


def _tensor(pixels: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(np.clip(pixels, 0.0, 1.0) * 2.0 - 1.0).to(like.dtype).to(like.device)


def _per_image(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Tensor], Tensor]:
    def run(noisy: Tensor) -> Tensor:
        # unclamped [0, 1] pixels: the noise must stay Gaussian for the denoisers
        pixels = ((noisy.double() + 1.0) / 2.0).cpu().numpy()
        out = np.stack([np.stack([fn(channel) for channel in image]) for image in pixels])
        return _tensor(out, noisy)

    return run


def blur(noisy: Tensor, std: float, strength: float) -> Tensor:
    """Gaussian blur of sigma ``strength`` pixels (kernel 2 ceil(3 sigma) + 1)."""
    size = 2 * math.ceil(3 * strength) + 1
    return gaussian_blur(noisy, [size, size], [strength, strength])


def bm3d(noisy: Tensor, std: float, strength: float) -> Tensor:
    """BM3D with noise std ``strength`` x the true one, on a mosaic of all the images."""
    import bm3d as bm3d_package

    n, c, h, w = noisy.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pixels = ((noisy.double() + 1.0) / 2.0).cpu().numpy()
    page = np.zeros((rows * h, cols * w, c))
    cells = [divmod(k, cols) for k in range(n)]  # (row, column) of each image on the page
    for k, (r, q) in enumerate(cells):
        page[r * h : (r + 1) * h, q * w : (q + 1) * w] = pixels[k].transpose(1, 2, 0)
    sigma = strength * std / 2.0
    out = bm3d_package.bm3d(page if c > 1 else page[..., 0], sigma_psd=sigma)
    out = out.reshape(rows * h, cols * w, c)
    tiles = [out[r * h : (r + 1) * h, q * w : (q + 1) * w] for r, q in cells]
    return _tensor(np.stack(tiles).transpose(0, 3, 1, 2), noisy)


def nl_means(noisy: Tensor, std: float, strength: float) -> Tensor:
    """Non-local means (5x5 patches, 13x13 search) with filter strength h = ``strength`` x
    the noise std."""
    from skimage.restoration import denoise_nl_means

    sigma = std / 2.0
    return _per_image(
        lambda im: denoise_nl_means(
            im, h=strength * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True
        )
    )(noisy)


def total_variation(noisy: Tensor, std: float, strength: float) -> Tensor:
    """Chambolle's total-variation denoising of weight ``strength`` x the noise std."""
    from skimage.restoration import denoise_tv_chambolle

    return _per_image(lambda im: denoise_tv_chambolle(im, weight=strength * std / 2.0))(noisy)


def wavelet(noisy: Tensor, std: float, strength: float) -> Tensor:
    """BayesShrink soft wavelet thresholding for noise std ``strength`` x the true one."""
    from skimage.restoration import denoise_wavelet

    sigma = strength * std / 2.0
    return _per_image(
        lambda im: denoise_wavelet(
            im, sigma=sigma, method="BayesShrink", mode="soft", rescale_sigma=True
        )
    )(noisy)


# The baselines by name; conf/denoise.yaml holds the strengths each tries.
BASELINES: dict[str, Denoiser] = {
    "bm3d": bm3d,
    "nl_means": nl_means,
    "total_variation": total_variation,
    "wavelet": wavelet,
    "blur": blur,
}
TUNE_ON = 256  # images the strength is chosen on (BM3D on a page of 1000 digits takes minutes)


def best_of(
    denoiser: Denoiser, strengths: tuple[float, ...], noisy: Tensor, clean: Tensor, std: float
) -> tuple[float, Tensor]:
    """The strength with the best mean PSNR on the first :data:`TUNE_ON` images (a tie: the
    larger), and its output on all of them."""
    best_score, best = -math.inf, -math.inf
    for strength in strengths:
        score = psnr(denoiser(noisy[:TUNE_ON], std, strength), clean[:TUNE_ON]).mean().item()
        if (score, strength) > (best_score, best):
            best_score, best = score, strength
    return best, denoiser(noisy, std, best)


def estimate_std(noisy: Tensor) -> Tensor:
    """Each image's noise std in model units, by scikit-image's wavelet estimate (Donoho's
    median absolute deviation of the finest diagonal detail band), on [0, 1] pixels x 2."""
    from skimage.restoration import estimate_sigma

    pixels = ((noisy.double() + 1.0) / 2.0).cpu().numpy()
    return torch.tensor(
        [2.0 * float(np.mean(estimate_sigma(image, channel_axis=0))) for image in pixels]
    )
