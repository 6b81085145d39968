"""Colour alignment of an enhanced image to its source (as one-step diffusion SR pipelines do after decoding)."""
import torch
from torch.nn import functional as F


def adain_align(img, reference, eps=1e-5):
    """Give ``img`` the per-channel mean and std of ``reference`` (AdaIN colour fix).

    Args:
        img (Tensor): [B,C,H,W] enhanced image.
        reference (Tensor): [B,C,h,w] source image (any size).

    Returns:
        Tensor: [B,C,H,W].
    """
    mean, std = img.mean(dim=(2, 3), keepdim=True), img.std(dim=(2, 3), keepdim=True)
    ref_mean, ref_std = reference.mean(dim=(2, 3), keepdim=True), reference.std(dim=(2, 3), keepdim=True)
    return (img - mean) / (std + eps) * ref_std + ref_mean


def wavelet_low(img, levels=5):
    """Low-frequency part of ``img`` by repeated dilated 3x3 blurs (à trous), as the StableSR wavelet fix does."""
    kernel = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]], dtype=img.dtype, device=img.device) / 16
    kernel = kernel.expand(img.shape[1], 1, 3, 3)
    low = img
    for level in range(levels):
        dilation = 2**level
        padded = F.pad(low, (dilation, ) * 4, mode='replicate')
        low = F.conv2d(padded, kernel, groups=img.shape[1], dilation=dilation)
    return low


def wavelet_align(img, reference, levels=5):
    """High frequencies of ``img`` + low frequencies of ``reference`` (same size [B,C,H,W])."""
    return img - wavelet_low(img, levels) + wavelet_low(reference, levels)


def align_colour(img, reference, method):
    """``method``: None / 'none', 'adain' or 'wavelet'; ``reference`` must match ``img`` in size for 'wavelet'."""
    if method in (None, 'none'):
        return img
    if method == 'adain':
        return adain_align(img, reference)
    if method == 'wavelet':
        return wavelet_align(img, reference)
    raise ValueError(f"colour alignment must be none, adain or wavelet, got '{method}'")
