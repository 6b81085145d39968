"""Ring basis, masks and frequency mixup (gtplus_arch.frequency) against hand-computed values."""
import math

import pytest
import torch

from gtplus_arch.frequency import (amplitude_spectrum_log, frequency_mixup, masks_from_coefficients,
                                   ring_gaussian_basis)


def reference_mixup(sources, masks):
    """The paper's formula, literally: shift every spectrum, mask, sum, shift back."""
    spectra = torch.fft.fftshift(torch.fft.fft2(sources, norm='ortho'), dim=(-2, -1))
    mixed = (spectra * masks.unsqueeze(2)).sum(dim=1)
    return torch.fft.ifft2(torch.fft.ifftshift(mixed, dim=(-2, -1)), norm='ortho').real


def test_ring_basis_matches_hand_computed_values():
    # 5x5 grid: y, x in {-1, -0.5, 0, 0.5, 1}; the centre pixel (2, 2) has d = 0, (2, 3) has d = 0.5,
    # (1, 3) has d = sqrt(0.5) and the corner (0, 0) has d = sqrt(2).
    basis = ring_gaussian_basis(5, 5, num_bins=25, base_sigma=0.05, dtype=torch.float64)
    assert basis.shape == (25, 5, 5)
    # bin 0: t = 0, sigma = 0.05, centred Gaussian exp(-d^2 / (2 * 0.05^2)) = exp(-200 d^2)
    assert basis[0, 2, 2] == 1
    assert basis[0, 2, 3].item() == pytest.approx(math.exp(-50), rel=1e-9)
    assert basis[0, 1, 3].item() == pytest.approx(math.exp(-100), rel=1e-9)
    # bin 1: t = 1/576, mu = sqrt(2)/576, sigma = 0.05 * (1 + 10/576)
    mu, sigma = math.sqrt(2) / 576, 0.05 * (1 + 10 / 576)
    assert basis[1, 2, 2].item() == pytest.approx(math.exp(-mu**2 / (2 * sigma**2)), rel=1e-9)
    assert basis[1, 2, 3].item() == pytest.approx(math.exp(-(0.5 - mu)**2 / (2 * sigma**2)), rel=1e-9)
    # bin 24: t = 1, mu = sqrt(2), sigma = 0.55 -> 2 sigma^2 = 0.605; peak 1 at the corners
    assert basis[24, 0, 0].item() == pytest.approx(1.0, abs=1e-12)
    assert basis[24, 4, 4].item() == pytest.approx(1.0, abs=1e-12)
    assert basis[24, 2, 2].item() == pytest.approx(math.exp(-2 / 0.605), rel=1e-9)
    assert basis[24, 2, 3].item() == pytest.approx(math.exp(-(0.5 - math.sqrt(2))**2 / 0.605), rel=1e-9)
    assert basis.max() <= 1 and basis.min() >= 0  # peak 1, not normalised


def test_ring_basis_is_cached_per_size_and_dtype():
    first = ring_gaussian_basis(16, 12)
    assert ring_gaussian_basis(16, 12) is first
    assert ring_gaussian_basis(16, 12, device='cpu') is first
    assert ring_gaussian_basis(12, 16) is not first
    assert ring_gaussian_basis(16, 12, num_bins=5).shape == (5, 16, 12)
    assert ring_gaussian_basis(16, 12, dtype=torch.float64).dtype == torch.float64
    assert not first.requires_grad


def test_basis_first_built_under_inference_mode_still_trains():
    with torch.inference_mode():
        ring_gaussian_basis(10, 14, num_bins=3)
    coefficients = torch.zeros(1, 2, 3, requires_grad=True)
    masks = masks_from_coefficients(coefficients * 2, ring_gaussian_basis(10, 14, num_bins=3))
    (masks[:, 0] * torch.rand(10, 14)).sum().backward()
    assert coefficients.grad is not None


def test_one_hot_masks_reproduce_each_source():
    torch.manual_seed(0)
    sources = torch.rand(2, 4, 3, 7, 9)  # odd sizes: fftshift and ifftshift differ there
    for k in range(4):
        masks = torch.zeros(2, 4, 7, 9)
        masks[:, k] = 1
        assert torch.allclose(frequency_mixup(sources, masks), sources[:, k], atol=1e-6)


def test_uniform_masks_give_the_mean():
    torch.manual_seed(0)
    sources = torch.rand(1, 4, 3, 8, 8)
    assert torch.allclose(frequency_mixup(sources, torch.full((1, 4, 8, 8), 0.25)), sources.mean(dim=1), atol=1e-6)


def test_single_frequency_case():
    # source 0 = 0.5 + 0.5 cos(2 pi x / 8) has energy only at DC and at x-frequency +-1; source 1 = 0.
    cols = torch.arange(8, dtype=torch.float64)
    wave = 0.5 * torch.cos(2 * math.pi * cols / 8)
    source0 = (0.5 + wave).expand(1, 8, 8)
    sources = torch.stack([source0, torch.zeros(1, 8, 8, dtype=torch.float64)]).unsqueeze(0)  # [1, 2, 1, 8, 8]
    # Centred layout: DC at (4, 4), x-frequency +-1 at (4, 3) and (4, 5).
    dc_only = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    dc_only[0, 0, 4, 4] = 1
    dc_only[0, 1] = 1 - dc_only[0, 0]
    assert torch.allclose(frequency_mixup(sources, dc_only)[0, 0], torch.full((8, 8), 0.5, dtype=torch.float64))
    ac_only = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    ac_only[0, 0, 4, 3] = ac_only[0, 0, 4, 5] = 1
    ac_only[0, 1] = 1 - ac_only[0, 0]
    assert torch.allclose(frequency_mixup(sources, ac_only)[0, 0], wave.expand(8, 8))


def test_masks_summing_to_one_preserve_identical_sources_and_match_the_formula():
    torch.manual_seed(0)
    image = torch.rand(2, 1, 3, 9, 11)
    masks = masks_from_coefficients(torch.randn(2, 4, 25), ring_gaussian_basis(9, 11))
    assert torch.allclose(masks.sum(dim=1), torch.ones(2, 9, 11), atol=1e-6)
    assert torch.allclose(frequency_mixup(image.expand(2, 4, 3, 9, 11), masks), image[:, 0], atol=1e-5)
    sources = torch.rand(2, 4, 3, 9, 11)
    assert torch.allclose(frequency_mixup(sources, masks), reference_mixup(sources, masks), atol=1e-6)


def test_mixup_is_differentiable_and_checks_shapes():
    sources = torch.rand(1, 2, 3, 8, 8)
    logits = torch.zeros(1, 2, 8, 8, requires_grad=True)
    frequency_mixup(sources, torch.softmax(logits, dim=1)).sum().backward()
    assert logits.grad is not None
    with pytest.raises(ValueError, match='must agree'):
        frequency_mixup(sources, torch.ones(1, 3, 8, 8))


def test_amplitude_spectrum_log():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 6, 5)
    out = amplitude_spectrum_log(img)
    # DC sits at (H//2, W//2) after the shift and is the (unnormalised) sum of the pixels.
    assert torch.allclose(out[:, :, 3, 2], torch.log10(img.sum(dim=(-2, -1)) + 1))
    assert torch.allclose(amplitude_spectrum_log(img[1:]), out[1:])  # per sample
    official = amplitude_spectrum_log(img, official_fftshift=True)
    # The released all-axes shift also rolls batch and channels: sample 0 gets sample 1's spectrum, R gets B's.
    assert torch.allclose(official[0, 0], out[1, 2])
