"""Cost of the diffusion-pairs pipeline (issue 12): the LQDiffusionModel training step against the bare diffusers
step, and the DiffusionRefinedSynthesizer refinement against its first-stage degradation alone.

Run: ``python benchmarks/bench_lq_diffusion.py [--threads 1] [--train-repeats 15] [--refine-repeats 5]``. Prints two
tables; in each, all rows are measured side by side in the same run (rows interleaved, medians). CPU only.

(a) Training step. Every arm trains the same UNet (diffusers ``UNet2DModel``, block_out_channels 32/64/128/128,
attention at level 3, 1 layer per block: the paper's layout at a CPU size) from the same initial weights, on the
same batch of 4 LQ crops of 32^2, with AdamW 1e-4, t < 250 of T = 1000 (linear betas):

- ``bare diffusers``: what diffusers' ``train_unconditional.py`` does per step: draw t and noise, ``add_noise``,
  ``unet(x_t, t).sample``, MSE against the noise, backward, AdamW step; ``+ EMAModel`` adds diffusers'
  ``EMAModel.step`` (decay 0.999), the EMA that script keeps.
- ``LQDiffusionModel``: ``feed_data`` (to [-1,1]) + ``optimize_parameters`` (the seeded generator of the iteration, the
  same draws and step; with ``ema_decay`` 0.999 basicsr's ``model_ema``).

(b) Refinement. ``DiffusionRefinedSynthesizer.forward`` on a batch of 4 HR crops of 128^2 (LQ 32^2), StableSR first
stage, UniPC, for steps in (10, 25, 50) and max_strength in (0.1, 0.25, 0.5), against the first stage alone on the
same HR with the same generator seeds (call i of every row is seeded i, so every row draws the same first-stage
degradations and the same uniform u per image). Per image, k = int(steps * max(u * max_strength, 1/steps)) denoising
steps run; images with the same k share one batched trajectory. The UNet is the one of (a) with random weights (a
trained one runs the same operations). Columns: ms per batch, the ratio to the first stage, Σk (the UNet's
image-evaluations per batch, averaged over the seeds timed) and the extra cost per image-evaluation, (t - t_first) /
Σk, which is constant when the cost grows as strength * steps.
"""
import argparse
import copy
import statistics
import tempfile

import torch
import torch.nn.functional as F
from timing import interleaved_medians, interleaved_training_medians, timed_step

UNET = {'sample_size': 32, 'block_out_channels': [32, 64, 128, 128], 'layers_per_block': 1, 'norm_num_groups': 8,
        'down_block_types': ['DownBlock2D', 'DownBlock2D', 'DownBlock2D', 'AttnDownBlock2D'],
        'up_block_types': ['AttnUpBlock2D', 'UpBlock2D', 'UpBlock2D', 'UpBlock2D']}
SCHEDULER = {'type': 'DDPMScheduler', 'num_train_timesteps': 1000, 'beta_schedule': 'linear',
             'prediction_type': 'epsilon'}
FIRST_STAGE = {'type': 'RealESRGANSynthesizer', 'scale': 4, 'preset': 'stablesr'}
BATCH, LQ_SIZE, MAX_TIMESTEP, LR, DECAY = 4, 32, 250, 1e-4, 0.999
STEPS, STRENGTHS = (10, 25, 50), (0.1, 0.25, 0.5)


def lq_batch():
    """Smooth random RGB LQ crops in [0,1], [BATCH,3,LQ_SIZE,LQ_SIZE]."""
    coarse = torch.rand(BATCH, 3, LQ_SIZE // 8, LQ_SIZE // 8, generator=torch.Generator().manual_seed(0))
    return F.interpolate(coarse, size=(LQ_SIZE, LQ_SIZE), mode='bicubic', align_corners=False).clamp(0, 1)


def bare_step(with_ema):
    """diffusers' train_unconditional step on its own UNet2DModel (seed-0 weights) as a callable."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel
    torch.manual_seed(0)
    unet = UNet2DModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in UNET.items()}).train()
    scheduler = DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if k != 'type'})
    optimizer = torch.optim.AdamW(unet.parameters(), lr=LR)
    ema = EMAModel(unet.parameters(), decay=DECAY, use_ema_warmup=False) if with_ema else None
    x0 = lq_batch() * 2 - 1
    counter = [0]

    def step():
        counter[0] += 1
        generator = torch.Generator().manual_seed(counter[0])
        t = torch.randint(0, MAX_TIMESTEP, (BATCH, ), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = scheduler.add_noise(x0, noise, t)
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(unet(x_t, t).sample, noise)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.step(unet.parameters())
    return step


def lq_diffusion_step(folder, ema_decay):
    """LQDiffusionModel's feed_data + optimize_parameters (seed-0 weights) as a callable."""
    from basicsr.models import build_model
    opt = {'name': 'bench', 'model_type': 'LQDiffusionModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'manual_seed': 0, 'network_g': dict(copy.deepcopy(UNET), type='LQDiffusionUNet'),
           'noise_scheduler': dict(SCHEDULER), 'path': {'models': folder, 'training_states': folder},
           'train': {'max_timestep': MAX_TIMESTEP, 'ema_decay': ema_decay, 'optim_g': {'type': 'AdamW', 'lr': LR}}}
    torch.manual_seed(0)
    return timed_step(build_model(opt), {'gt': lq_batch()})


def training_table(repeats):
    import logging
    logging.getLogger('basicsr').setLevel(logging.WARNING)  # the model's set-up lines are not the table
    with tempfile.TemporaryDirectory() as folder:
        arms = {'bare diffusers': bare_step(False), 'LQDiffusionModel, ema_decay 0': lq_diffusion_step(folder, 0),
                'bare diffusers + EMAModel': bare_step(True),
                f'LQDiffusionModel, ema_decay {DECAY}': lq_diffusion_step(folder, DECAY)}
        medians = interleaved_training_medians(arms, repeats)
    names = list(arms)
    reference = {names[0]: names[0], names[1]: names[0], names[2]: names[2], names[3]: names[2]}
    width = max(map(len, names))
    print(f'(a) Training step, UNet2DModel {UNET["block_out_channels"]} (attention at level 3), batch {BATCH} of '
          f'{LQ_SIZE}^2, AdamW, t < {MAX_TIMESTEP}; median of {repeats} interleaved steps per arm, '
          f'{torch.get_num_threads()} thread(s), CPU')
    print(f'| {"arm":<{width}} | {"ms / step":>9} | {"x bare (same EMA)":>17} |')
    print(f'| {"-" * width} | {"-" * 9} | {"-" * 17} |')
    for name in names:
        print(f'| {name:<{width}} | {medians[name] * 1e3:9.1f} | {medians[name] / medians[reference[name]]:17.3f} |')
    print()


def refinement_table(repeats):
    from gtplus_arch import RealESRGANSynthesizer
    from gtplus_arch.diffusion_synthesizer_arch import DiffusionRefinedSynthesizer
    hr = F.interpolate(lq_batch(), scale_factor=4, mode='bicubic', align_corners=False).clamp(0, 1)
    first = RealESRGANSynthesizer(4, 'stablesr')
    rows = {'first stage alone (RealESRGANSynthesizer stablesr)': (first, None)}
    for steps in STEPS:
        for strength in STRENGTHS:
            torch.manual_seed(0)
            synth = DiffusionRefinedSynthesizer(scale=4, first_stage=dict(FIRST_STAGE), unet=copy.deepcopy(UNET),
                                                noise_scheduler=dict(SCHEDULER),
                                                sampler={'type': 'UniPCMultistepScheduler'}, steps=steps,
                                                max_strength=strength).eval()
            rows[f'refined, steps {steps}, max_strength {strength}'] = (synth, (steps, strength))

    def seeded_calls(module):
        counter = [0]

        def call():
            counter[0] += 1
            module(hr, torch.Generator().manual_seed(counter[0]))
        return call
    warmup = 1
    medians = interleaved_medians({name: seeded_calls(module) for name, (module, _) in rows.items()}, repeats,
                                  warmup=warmup)
    base = medians[next(iter(rows))]
    width = max(map(len, rows))
    print(f'(b) Refinement, DiffusionRefinedSynthesizer (UniPC) on {BATCH} HR crops of {LQ_SIZE * 4}^2 (LQ '
          f'{LQ_SIZE}^2) vs its first stage; median of {repeats} interleaved calls per row, {torch.get_num_threads()} '
          'thread(s), CPU')
    print(f'| {"row":<{width}} | {"ms / batch":>10} | {"x first stage":>13} | {"Σk / batch":>10} '
          f'| {"extra ms / (image x step)":>25} |')
    print(f'| {"-" * width} | {"-" * 10} | {"-" * 13} | {"-" * 10} | {"-" * 25} |')
    for name, (module, setting) in rows.items():
        ms = medians[name] * 1e3
        if setting is None:
            print(f'| {name:<{width}} | {ms:10.1f} | {1:13.2f} | {0:10.1f} | {"":>25} |')
            continue
        sums = []  # the k each image of the timed calls drew (the calls after the warm-up ones)
        with torch.inference_mode():
            for seed in range(warmup + 1, warmup + repeats + 1):
                generator = torch.Generator().manual_seed(seed)
                module.first_stage(hr, generator)
                sums.append(sum(module.draw_steps(BATCH, generator)))
        total = statistics.fmean(sums)
        print(f'| {name:<{width}} | {ms:10.1f} | {medians[name] / base:13.2f} | {total:10.1f} '
              f'| {(medians[name] - base) * 1e3 / total:25.2f} |')
    print('Σk: denoising steps summed over the images of a batch (k per image = int(steps * max(u * max_strength, '
          f'1/steps)), mean over the timed seeds); an image-step is one UNet evaluation of one {LQ_SIZE}^2 image. A '
          'constant last column means the cost grows as strength x steps.')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--train-repeats', type=int, default=15, help='timed steps per training arm')
    parser.add_argument('--refine-repeats', type=int, default=5, help='timed calls per refinement row')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import gtplus_models  # noqa: F401  (registers every gtplus component)
    training_table(args.train_repeats)
    refinement_table(args.refine_repeats)


if __name__ == '__main__':
    main()
