"""Cost of the frequency mixup relative to a bare FFT round trip, and to an official-style mixup.

Run: ``python benchmarks/bench_mixup.py [--size 512] [--threads 2] [--repeats 20]``. Prints one table, all rows
measured side by side in the same run (B=1, N+1=4 sources, C=3).

- ``fft2+ifft2``: ``ifft2(fft2(sources))`` of the same [B,S,C,H,W] sources: the floor any mixup pays.
- ``gtplus``: :func:`gtplus_arch.frequency_mixup` with masks from the cached ring basis (the CFMG's path:
  ``masks_from_coefficients`` + mixup).
- ``official-style``: rebuilds the 25-ring basis on every call (per source, per batch sample, as the released
  ``generate_gaussian_masks`` does), weights it, softmaxes and mixes with per-source shifted spectra.
"""
import argparse
import math

import torch

from gtplus_arch.frequency import frequency_mixup, masks_from_coefficients, ring_gaussian_basis
from timing import interleaved_medians


def official_style_mixup(sources, coefficients, num_bins=25, base_sigma=0.05):
    """The released pipeline's arithmetic: basis rebuilt per call and per source, spectra shifted there and back."""
    batch, num_sources, _, height, width = sources.shape
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing='ij')
    x, y = x.unsqueeze(0).expand(batch, -1, -1), y.unsqueeze(0).expand(batch, -1, -1)
    dist = torch.sqrt(x**2 + y**2)
    distances = torch.linspace(0, 1, num_bins)**2 * (math.sqrt(2) / 2)
    per_source = []
    for _ in range(num_sources):
        rings = []
        for b in range(num_bins):
            sigma = base_sigma * (1 + 10 * distances[b] / (math.sqrt(2) / 2))
            centre = 0 if b == 0 else distances[b] * 2
            rings.append(torch.exp(-(dist - centre)**2 / (2 * sigma**2)).unsqueeze(1))
        per_source.append(torch.cat(rings, dim=1).unsqueeze(1))
    basis = torch.cat(per_source, dim=1)  # [B, S, bins, H, W]
    masks = torch.softmax((basis * coefficients[..., None, None]).sum(dim=2), dim=1)
    mixed = sum(
        torch.fft.fftshift(torch.fft.fftn(sources[:, i], norm='ortho', dim=(-2, -1)), dim=(-2, -1)) *
        masks[:, i].unsqueeze(1) for i in range(num_sources))
    return torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=(-2, -1)), norm='ortho', dim=(-2, -1)).real


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, num_sources, channels, num_bins = 1, 4, 3, 25
    sources = torch.rand(batch, num_sources, channels, args.size, args.size)
    coefficients = torch.softmax(torch.randn(batch, num_sources, num_bins), dim=1)

    def round_trip():
        return torch.fft.ifft2(torch.fft.fft2(sources, norm='ortho'), norm='ortho').real

    def ours():
        basis = ring_gaussian_basis(args.size, args.size, num_bins)
        return frequency_mixup(sources, masks_from_coefficients(coefficients, basis))

    masks = masks_from_coefficients(coefficients, ring_gaussian_basis(args.size, args.size, num_bins))

    def ours_mixup_only():
        return frequency_mixup(sources, masks)

    def official():
        return official_style_mixup(sources, coefficients, num_bins)

    with torch.inference_mode():
        assert torch.allclose(ours(), official(), atol=1e-4), 'gtplus and official-style mixups disagree'
    fns = {'fft2+ifft2 round trip': round_trip, 'gtplus frequency_mixup (masks given)': ours_mixup_only,
           'gtplus masks + mixup (cached basis)': ours, 'official-style (basis rebuilt per call)': official}
    repeats = dict.fromkeys(fns, args.repeats)
    repeats['official-style (basis rebuilt per call)'] = max(3, args.repeats // 4)  # 10-20x slower
    rows = list(interleaved_medians(fns, repeats, warmup=3).items())
    base = rows[0][1]
    print(f'Mixup at {args.size}x{args.size}, B={batch}, N+1={num_sources}, C={channels}, '
          f'{args.threads} threads, median of {args.repeats} (official-style: {repeats[list(fns)[-1]]}), '
          'rows interleaved')
    print(f'| {"variant":<42} | {"ms":>9} | {"x round trip":>12} |')
    print(f'| {"-" * 42} | {"-" * 9} | {"-" * 12} |')
    for name, seconds in rows:
        print(f'| {name:<42} | {seconds * 1e3:9.1f} | {seconds / base:12.2f} |')


if __name__ == '__main__':
    main()
