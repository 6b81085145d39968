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
- ``UndertrainedReconstructionSynthesizer``: MATLAB-bicubic first stage, then the reconstruction network on the LR
  (64^2 at the defaults) in eval mode: VQ-VAE-2 at rosinality's default size (channel 128, 2 residual blocks of 32
  channels, 64-dim codes, 512 codes per codebook; the paper's setup, options/train/Undertrained/
  train_VQVAE2_DF2K_epochs.yml) and the one-level VQVAE of the same size. The weights are randomly initialised
  (seed 0): a trained snapshot has the same shapes and runs the same operations, so the time is the same.
- ``BicubicSynthesizer`` (matlab / torch), and basicsr's per-image MATLAB ``imresize`` it replaces.

Before the timing, the script checks the claim that ``degrade`` and ``feed_data`` give identical outputs: for the
first ``--check-plans`` plans, feed_data with the global torch RNG seeded s and ``degrade`` with a generator seeded s
(same kernels and plan), and prints the largest absolute difference (tests/test_synthesizers.py proves it bit for bit
on more cases).
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
from gtplus_arch import BicubicSynthesizer, RealESRGANSynthesizer, UndertrainedReconstructionSynthesizer
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


# rosinality/vq-vae-2-pytorch's defaults, as in options/train/Undertrained/train_VQVAE2_DF2K_epochs.yml
ROSINALITY_SIZE = {'in_channel': 3, 'channel': 128, 'n_res_block': 2, 'n_res_channel': 32, 'embed_dim': 64,
                   'n_embed': 512, 'decay': 0.99}


def undertrained(network):
    """UndertrainedReconstructionSynthesizer (x4, MATLAB-bicubic first stage) with a randomly initialised
    ``network`` ('VQVAE2' or 'VQVAE') of rosinality's default size."""
    torch.manual_seed(0)
    return UndertrainedReconstructionSynthesizer(scale=4, reconstruction={'type': network, **ROSINALITY_SIZE},
                                                 first_stage={'type': 'BicubicSynthesizer'}).eval()


def check_identical(reference, synth, data, kernels, plans, seed=17):
    """Largest |feed_data - degrade| over ``plans``: same kernels and plan, the global torch RNG seeded ``seed``
    for feed_data and a generator seeded ``seed`` for degrade (as in tests/test_synthesizers.py)."""
    worst = 0.
    with torch.no_grad():
        for plan in plans:
            torch.manual_seed(seed)
            expected = reference(dict(data, gt=data['gt'].clone()), plan)
            out = synth.degrade(data['gt'], *kernels, plan, torch.Generator().manual_seed(seed))
            if out.shape != expected.shape:
                return float('inf')
            worst = max(worst, (out - expected).abs().max().item())
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--check-plans', type=int, default=2,
                        help='plans on which degrade is compared with feed_data before the timing (0: no check)')
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
    vqvae2, vqvae = undertrained('VQVAE2'), undertrained('VQVAE')
    checked = plans[:args.check_plans]
    worst = check_identical(reference, realesrgan, data, kernels, checked) if checked else None
    fns = {
        'basicsr RealESRGANModel.feed_data': lambda: reference(data, next(reference_plans)),
        'RealESRGANSynthesizer.degrade (same draws)': lambda: realesrgan.degrade(
            hr, *kernels, next(our_plans), generator),
        'RealESRGANSynthesizer (realesrgan, all draws)': lambda: realesrgan(hr, generator),
        'RealESRGANSynthesizer (stablesr, all draws)': lambda: stablesr(hr, generator),
        'UndertrainedReconstructionSynthesizer (VQVAE2)': lambda: vqvae2(hr, generator),
        'UndertrainedReconstructionSynthesizer (VQVAE)': lambda: vqvae(hr, generator),
        'BicubicSynthesizer (matlab)': lambda: bicubic(hr),
        'BicubicSynthesizer (torch)': lambda: bicubic_torch(hr),
        'basicsr imresize (per image)': lambda: [imresize(image, 1 / 4) for image in hr],
    }
    rows = list(interleaved_medians(fns, args.repeats, warmup=1).items())
    base = rows[0][1]
    print(f'Synthesizers at {args.size}x{args.size} HR, batch {args.batch}, x4, {args.threads} threads, CPU, '
          f'median of {args.repeats}, rows interleaved')
    width = max(len(name) for name, _ in rows)
    print(f'| {"synthesizer":<{width}} | {"ms/batch":>9} | {"images/s":>9} | {"x basicsr":>9} |')
    print(f'| {"-" * width} | {"-" * 9} | {"-" * 9} | {"-" * 9} |')
    for name, seconds in rows:
        print(f'| {name:<{width}} | {seconds * 1e3:9.1f} | {args.batch / seconds:9.1f} | {base / seconds:9.2f} |')
    print('x basicsr: throughput relative to the first row (above 1: faster).')
    if worst is not None:
        print(f'RealESRGANSynthesizer.degrade vs basicsr feed_data, same kernels, plan and seed, {len(checked)} plans: '
              f'max |difference| = {worst:.3g} ({"identical" if worst == 0 else "NOT identical"})')


if __name__ == '__main__':
    main()
