"""Throughput of the degradation synthesizers relative to BasicSR's own Real-ESRGAN degradation.

Run: ``python benchmarks/bench_synthesizers.py [--size 256] [--batch 4] [--threads 2] [--repeats 10]``. Prints one
table of images/s and ratios, all rows measured side by side in the same run (rows interleaved, medians).

- ``basicsr feed_data``: ``RealESRGANModel.feed_data`` on the same HR batch, with kernels drawn beforehand (in
  BasicSR the dataset workers draw them): the reference row. Its JPEG output is made contiguous, as in the tests
  (under torch 2.x basicsr's filter2D fails on DiffJPEG's channels-last output otherwise).
- ``RealESRGANSynthesizer.degrade``: the same chain, same kernels and same per-batch choices: call i of both rows
  runs plan i of a fixed list (feed_data's ``random``/``numpy.random`` calls are scripted to make it), so these two
  rows do the same LQ work. feed_data also USM-sharpens the GT a second time after its training-pair pool (for the
  losses, a model's job, not a synthesizer's); at 256^2 on a CPU that 51x51 filter is a large part of its time, and
  most of the gap between the two rows.
- ``RealESRGANSynthesizer`` (realesrgan / stablesr): the whole forward, kernels and choices drawn in the module per
  call; the choices change the cost (e.g. Poisson noise and upscaling are dearer), so read these rows as averages.
- ``BicubicSynthesizer`` (matlab / torch), and basicsr's per-image MATLAB ``imresize`` it replaces.
"""
import argparse
import itertools
import random
from unittest import mock

import numpy as np
import torch

import gtplus_arch  # noqa: F401  (registers the synthesizers, applies the basicsr fixes)
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.matlab_functions import imresize
from gtplus_arch import BicubicSynthesizer, RealESRGANSynthesizer
from timing import interleaved_medians


def basicsr_degradation(synth, size):
    """``RealESRGANModel.feed_data`` as a callable(data, plan) on the CPU, with ``synth``'s options, its random
    choices scripted to make ``plan`` (see the module docstring)."""
    jpeger = DiffJPEG(differentiable=False)
    model = RealESRGANModel.__new__(RealESRGANModel)  # __init__ builds the networks and calls .cuda()
    model.opt = {**synth.params, 'scale': synth.scale, 'gt_size': size}
    model.is_train, model.device = True, torch.device('cpu')
    model.jpeger = lambda x, quality: jpeger(x, quality=quality).contiguous()
    model.usm_sharpener = USMSharp()
    model._dequeue_and_enqueue = lambda: None  # the training-pair pool is not degradation (and calls .cuda())

    def run(data, plan):
        draws = {key: iter(values) for key, values in plan.basicsr_draws().items()}
        with mock.patch.object(random, 'choices', lambda population, weights: [next(draws['choices'])]), \
                mock.patch.object(random, 'choice', lambda population: next(draws['choice'])), \
                mock.patch.object(np.random, 'uniform', lambda *bounds: next(draws['uniform'])):
            model.feed_data(data)
        return model.lq

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hr = torch.rand(args.batch, 3, args.size // 8, args.size // 8)
    hr = torch.nn.functional.interpolate(hr, size=(args.size, args.size), mode='bicubic').clamp(0, 1)
    realesrgan, stablesr = RealESRGANSynthesizer(), RealESRGANSynthesizer(preset='stablesr')
    generator = torch.Generator().manual_seed(0)
    kernels = realesrgan.draw_kernels(args.batch, generator)
    data = {'gt': hr, 'kernel1': kernels[0], 'kernel2': kernels[1], 'sinc_kernel': kernels[2]}
    reference = basicsr_degradation(realesrgan, args.size)
    bicubic, bicubic_torch = BicubicSynthesizer(), BicubicSynthesizer(method='torch')
    plans = [realesrgan.draw_plan(generator) for _ in range(args.repeats + 1)]  # +1: the warm-up call
    reference_plans, our_plans = itertools.cycle(plans), itertools.cycle(plans)
    fns = {
        'basicsr RealESRGANModel.feed_data': lambda: reference(data, next(reference_plans)),
        'RealESRGANSynthesizer.degrade (same draws)': lambda: realesrgan.degrade(
            hr, *kernels, next(our_plans), generator),
        'RealESRGANSynthesizer (realesrgan, all draws)': lambda: realesrgan(hr, generator),
        'RealESRGANSynthesizer (stablesr, all draws)': lambda: stablesr(hr, generator),
        'BicubicSynthesizer (matlab)': lambda: bicubic(hr),
        'BicubicSynthesizer (torch)': lambda: bicubic_torch(hr),
        'basicsr imresize (per image)': lambda: [imresize(image, 1 / 4) for image in hr],
    }
    rows = list(interleaved_medians(fns, args.repeats, warmup=1).items())
    base = rows[0][1]
    print(f'Synthesizers at {args.size}x{args.size} HR, batch {args.batch}, x4, {args.threads} threads, CPU, '
          f'median of {args.repeats}, rows interleaved')
    print(f'| {"synthesizer":<46} | {"ms/batch":>9} | {"images/s":>9} | {"x basicsr":>9} |')
    print(f'| {"-" * 46} | {"-" * 9} | {"-" * 9} | {"-" * 9} |')
    for name, seconds in rows:
        print(f'| {name:<46} | {seconds * 1e3:9.1f} | {args.batch / seconds:9.1f} | {base / seconds:9.2f} |')
    print('x basicsr: throughput relative to the first row (above 1: faster).')


if __name__ == '__main__':
    main()
