"""Ring-shaped Gaussian frequency basis and frequency mixup: the one place these live in gtplus.

The CFMG, the enhance-GT tool and ORNet training all call these functions.
"""
import functools
import math

import torch


# Small on purpose: one basis is num_bins·H·W values (92 MB at 1280x720 in float32). Training uses one patch size;
# whole-image tools see a few sizes.
@functools.lru_cache(maxsize=4)
def _cached_basis(height, width, num_bins, base_sigma, device, dtype):
    # A first call under torch.inference_mode would otherwise cache an inference tensor, which a later training
    # step could not save for backward.
    with torch.inference_mode(False), torch.no_grad():
        return _build_basis(height, width, num_bins, base_sigma, device, dtype)


def _build_basis(height, width, num_bins, base_sigma, device, dtype):
    y = torch.linspace(-1, 1, height, dtype=torch.float64)
    x = torch.linspace(-1, 1, width, dtype=torch.float64)
    yy, xx = torch.meshgrid(y, x, indexing='ij')
    dist = torch.sqrt(xx**2 + yy**2)  # in [0, sqrt(2)]; small at the centre, where fftshift puts DC
    rings = []
    for b in range(num_bins):
        t = (b / (num_bins - 1))**2
        mu, sigma = t * math.sqrt(2), base_sigma * (1 + 10 * t)
        if b == 0:
            rings.append(torch.exp(-dist**2 / (2 * sigma**2)))
        else:
            rings.append(torch.exp(-(dist - mu)**2 / (2 * sigma**2)))
    return torch.stack(rings).to(device=device, dtype=dtype)


def ring_gaussian_basis(h, w, num_bins=25, base_sigma=0.05, device=None, dtype=torch.float32):
    """The official ring basis on a centred, normalised frequency grid.

    ``y, x = linspace(-1, 1, H | W)``, ``d = sqrt(x² + y²)``; for b = 0..B-1: ``t_b = (b/(B-1))²``,
    ``mu_b = t_b·√2``, ``sigma_b = base_sigma·(1 + 10·t_b)``; ring 0 is ``exp(-d²/2σ_0²)``, ring b is
    ``exp(-(d - mu_b)²/2σ_b²)``. Peak 1, not normalised.

    Cached per (size, bins, sigma, device, dtype): the official code rebuilt it on every call, which cost 15-20×
    an FFT round trip. The returned tensor is shared and does not require grad: use it freely in autograd graphs,
    but never modify it in place (clone first).

    Args:
        h, w (int): spectrum size (the image size).
        num_bins (int): number of rings B. Official: 25.
        base_sigma (float): width of ring 0. Official: 0.05.
        device (torch.device | str | None): where the basis lives (None: CPU).
        dtype (torch.dtype): its dtype (computed in float64, then cast).

    Returns:
        Tensor: [num_bins, h, w], values in [0, 1], centred layout (ring 0 peaks at (h//2, w//2) for odd sizes and
        near it for even ones, as ``linspace(-1, 1)`` puts no sample exactly at 0 there).
    """
    device = torch.device(device) if device is not None else torch.device('cpu')
    return _cached_basis(int(h), int(w), int(num_bins), float(base_sigma), device, dtype)


def spatial_fftshift(x, official_fftshift=False):
    """fftshift over the last two (spatial) dims; ``official_fftshift`` reproduces the released all-axes shift,
    which also rolls the batch and channel axes (mixing samples when B > 1)."""
    return torch.fft.fftshift(x) if official_fftshift else torch.fft.fftshift(x, dim=(-2, -1))


def amplitude_spectrum_log(img, official_fftshift=False):
    """``log10(|fftshift(fft2(img))| + 1)``: the CFMG's spectral input channels (unnormalised FFT).

    Args:
        img (Tensor): [B,C,H,W] RGB in [0,1].
        official_fftshift (bool): shift over all axes as the released code does (see :func:`spatial_fftshift`).

    Returns:
        Tensor: [B,C,H,W], centred spectrum (DC at index (H//2, W//2)), >= 0.
    """
    return torch.log10(spatial_fftshift(torch.fft.fft2(img), official_fftshift).abs() + 1)


# The name the first version exported; kept so existing callers keep working.
log_amplitude = amplitude_spectrum_log


def masks_from_coefficients(coefficients, basis):
    """Per-source frequency masks ``M_i = softmax_i(Σ_b c[i,b]·R_b)``.

    Args:
        coefficients (Tensor): [B, S, num_bins] (S = N+1 sources).
        basis (Tensor): [num_bins, H, W].

    Returns:
        Tensor: [B, S, H, W], summing to 1 over S at every frequency (centred layout, DC in the middle).
    """
    logits = torch.einsum('bsk,khw->bshw', coefficients, basis)
    return torch.softmax(logits, dim=1)


def frequency_mixup(sources, masks):
    """Mix sources in the frequency domain: ``Re(ifft2(ifftshift(Σ_i M_i ⊙ fftshift(fft2(I_i)))))``, ortho FFT.

    The shifts act on the spatial dims only. Shifting is a permutation, so ``ifftshift(Σ_i M_i ⊙ fftshift(F_i))``
    equals ``Σ_i ifftshift(M_i) ⊙ F_i`` exactly (odd sizes included): shifting the (smaller, real) masks once
    replaces shifting every complex spectrum twice, which keeps the mixup near the cost of a bare FFT round trip.

    Args:
        sources (Tensor): [B, S, C, H, W] images (RGB in [0,1]).
        masks (Tensor): [B, S, H, W] centred-layout masks, shared by the channels.

    Returns:
        Tensor: [B, C, H, W], real, not clamped.
    """
    if sources.dim() != 5 or masks.dim() != 4 or sources.shape[:2] != masks.shape[:2] or \
            sources.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f'sources [B,S,C,H,W] and masks [B,S,H,W] must agree; got {tuple(sources.shape)} and '
                         f'{tuple(masks.shape)}')
    spectra = torch.fft.fft2(sources, norm='ortho')
    uncentred_masks = torch.fft.ifftshift(masks, dim=(-2, -1)).unsqueeze(2)
    mixed = (spectra * uncentred_masks).sum(dim=1)
    return torch.fft.ifft2(mixed, norm='ortho').real
