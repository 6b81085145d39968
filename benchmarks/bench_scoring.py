"""Scoring throughput of the quality adapter (images/s) on the embedded photos, one image at a time as
``gtplus score`` does. NIQE, PIQE and their ensemble at 256² and 512²; ratios are against NIQE at 256², measured
in the same run.

Usage: HF_HUB_OFFLINE=1 python benchmarks/bench_scoring.py [--repeats 3] [--device cpu]
"""
import argparse
import time

import cv2
import numpy as np
import torch

from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
from gtplus_models.quality import QualityEnsemble, create_quality_metric


def photos_at(size):
    """The sample photos resized to size x size: list of Tensor[1,3,size,size] RGB in [0,1]."""
    out = []
    for name in sample_photo_names():
        img = cv2.resize(load_sample_photo(name), (size, size), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(img.astype(np.float32) / 255.).permute(2, 0, 1)[None])
    return out


def throughput(score, images, repeats):
    """Images per second of ``score`` over ``images`` (one warm-up pass first)."""
    for img in images[:2]:
        score(img)
    start = time.perf_counter()
    for _ in range(repeats):
        for img in images:
            score(img)
    return repeats * len(images) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    niqe, piqe = create_quality_metric('niqe', device=args.device), create_quality_metric('piqe', device=args.device)
    ensemble = QualityEnsemble(['niqe', 'piqe'], device=args.device).fit({'niqe': [2., 10.], 'piqe': [10., 60.]})
    rows = []
    with torch.no_grad():
        for size in (256, 512):
            images = [img.to(args.device) for img in photos_at(size)]
            for name, score in (('niqe', niqe), ('piqe', piqe), ('ensemble(niqe+piqe)', ensemble)):
                rows.append((name, size, throughput(score, images, args.repeats)))
    base = rows[0][2]
    print(f'device={args.device} threads={torch.get_num_threads()} images={len(sample_photo_names())} '
          f'repeats={args.repeats}')
    print(f'| {"metric":<20} | size | images/s | vs NIQE@256 |')
    print(f'|{"-" * 22}|------|----------|-------------|')
    for name, size, rate in rows:
        print(f'| {name:<20} | {size:>4} | {rate:>8.2f} | {rate / base:>10.2f}x |')


if __name__ == '__main__':
    main()
