"""Training-step cost of SynthesizedSRModel (pairs made online from HR) relative to basicsr's SRModel (pairs read).

Run: ``python benchmarks/bench_synthesized_sr_step.py [--iters 4] [--repeats 3] [--threads 2]``. Prints one table,
all arms measured side by side in the same run: a round is ``--iters`` steps of every arm, one step of each arm in
turn; the table shows, for each part of the step, the median of its ``--repeats`` round means (s / iter is their
sum); each arm first takes one untimed step.

Data, made in a temporary folder: an HR LMDB of the 8 embedded photos (centre crops of 256^2, written by
``gtplus make-lmdb``'s writer, PNG values) and, for SRModel, the paired LQ/GT LMDBs that ``gtplus synthesize`` makes
from it offline with the StableSR-preset RealESRGANSynthesizer (one variant per photo, seed 0). Which synthesizer made
the pairs does not change SRModel's step: it reads one more (64^2) image per sample and synthesizes nothing.

A step is what basicsr's training loop does per iteration with ``num_worker_per_gpu: 0``: the next batch from the
data loader (read, random 128^2 crop, flips and rotations, collate), ``feed_data``, ``optimize_parameters``. Every
arm trains the same network from the same initial weights: basicsr's EDSR x4 (64 features, 8 residual blocks),
L1 loss, Adam, batch 4, on the CPU. The arms:

- ``SRModel``: basicsr's, on the prepared pair LMDBs (PairedImageDataset), the reference;
- ``SynthesizedSRModel`` on the HR LMDB (GTPlusSingleHRDataset), its LQ made in ``feed_data`` by
  ``BicubicSynthesizer`` (MATLAB bicubic), ``RealESRGANSynthesizer`` (stablesr and realesrgan presets) and
  ``UndertrainedReconstructionSynthesizer`` (bicubic first stage, then VQ-VAE-2 at rosinality's default size; random
  weights saved as the snapshot it loads: a trained snapshot runs the same operations).

Columns: seconds per step, its parts (data loader, ``feed_data`` = the synthesis for the SynthesizedSRModel arms,
``optimize_parameters``), the step time relative to SRModel's (above 1: slower), and that ratio with SRModel's
``optimize_parameters`` time in place of the arm's: every arm optimizes the same network on batches of the same
sizes, so on a shared machine the differences between their optimize times are noise, and this column shows the
cost the synthesis adds without it. The RealESRGAN arms draw different degradations at each iteration (the
per-iteration pair seeds) and some cost more than others (Poisson noise, upscaling), so their rows are averages over
the iterations timed; the seeds depend only on ``manual_seed`` and the iteration, so every run times the same
degradations.
"""
import argparse
import copy
import os
import statistics
import tempfile
import time

import torch

EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 8, 'upscale': 4}
VQVAE2 = {'type': 'VQVAE2', 'in_channel': 3, 'channel': 128, 'n_res_block': 2, 'n_res_channel': 32, 'embed_dim': 64,
          'n_embed': 512, 'decay': 0.99}  # options/train/Undertrained/train_VQVAE2_DF2K_epochs.yml
STABLESR = {'type': 'RealESRGANSynthesizer', 'scale': 4, 'preset': 'stablesr'}
SYNTHESIZERS = {  # arm name -> network_synth block (None: SRModel on the prepared pairs)
    'SRModel (prepared pair LMDB)': None,
    'SynthesizedSRModel, BicubicSynthesizer': {'type': 'BicubicSynthesizer', 'scale': 4},
    'SynthesizedSRModel, RealESRGANSynthesizer stablesr': STABLESR,
    'SynthesizedSRModel, RealESRGANSynthesizer realesrgan': {'type': 'RealESRGANSynthesizer', 'scale': 4,
                                                             'preset': 'realesrgan'},
    'SynthesizedSRModel, Undertrained (VQVAE2)': {'type': 'UndertrainedReconstructionSynthesizer', 'scale': 4,
                                                  'reconstruction': VQVAE2,
                                                  'first_stage': {'type': 'BicubicSynthesizer'}},
}
PHOTO_SIZE, GT_SIZE, BATCH = 256, 128, 4


def centre_square(img, size):
    """HxWx3 uint8 -> size x size uint8: the short side area-resized to ``size``, centre-cropped."""
    import cv2
    height, width = img.shape[:2]
    scale = size / min(height, width)
    img = cv2.resize(img, (max(size, round(width * scale)), max(size, round(height * scale))),
                     interpolation=cv2.INTER_AREA)
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[top:top + size, left:left + size]


def write_data(folder):
    """The HR LMDB of the embedded photos and the pair LMDBs synthesized from it; returns (hr, lq, gt) paths."""
    from gtplus_data.lmdb_writer import write_images
    from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
    from gtplus_models.tools.synthesize import synthesize
    hr = os.path.join(folder, 'hr.lmdb')
    write_images(hr, [(name, centre_square(load_sample_photo(name), PHOTO_SIZE)) for name in sample_photo_names()],
                 desc='hr')
    synthesize(hr, os.path.join(folder, 'pairs'), dict(STABLESR), seed=0, preview=0)
    return hr, os.path.join(folder, 'pairs_lq.lmdb'), os.path.join(folder, 'pairs_gt.lmdb')


def dataset_opt(hr, lq, gt, paired):
    common = {'name': 'bench', 'phase': 'train', 'io_backend': {'type': 'lmdb'}, 'gt_size': GT_SIZE, 'scale': 4,
              'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': BATCH,
              'dataset_enlarge_ratio': 1000}
    if paired:
        return {**common, 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq}
    return {**common, 'type': 'GTPlusSingleHRDataset', 'dataroot_gt': hr}


def build_loader(opt):
    """basicsr's training loader (EnlargedSampler, no worker processes) over ``opt``."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler
    dataset = build_dataset(dict(opt))
    sampler = EnlargedSampler(dataset, 1, 0, opt['dataset_enlarge_ratio'])
    return build_dataloader(dataset, opt, num_gpu=0, dist=False, sampler=sampler, seed=0)


def build_arm(folder, data, synth, vqvae_weights):
    """(model, batch iterator) of one arm; every network_g starts from the same weights (seed 0)."""
    from basicsr.models import build_model
    train_set = dataset_opt(*data, paired=synth is None)
    opt = {'name': 'bench', 'model_type': 'SRModel' if synth is None else 'SynthesizedSRModel', 'scale': 4,
           'num_gpu': 0, 'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1, 'manual_seed': 0,
           'datasets': {'train': train_set}, 'network_g': dict(EDSR),
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': folder, 'training_states': folder},
           'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10**6], 'gamma': 0.5},
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}}}
    if synth is not None:
        opt['network_synth'] = copy.deepcopy(synth)
        if synth['type'] == 'UndertrainedReconstructionSynthesizer':
            opt['path']['pretrain_network_synth'] = vqvae_weights
    torch.manual_seed(0)
    model = build_model(opt)
    return model, iter(build_loader(train_set))


class Arm:
    """One model and its loader; ``step()`` runs the next training iteration and returns its three part times."""

    def __init__(self, model, batches):
        self.model, self.batches, self.iteration = model, batches, 0

    def step(self):
        self.iteration += 1
        start = time.perf_counter()
        batch = next(self.batches)
        read = time.perf_counter()
        self.model.feed_data(batch)
        fed = time.perf_counter()
        self.model.optimize_parameters(self.iteration)  # the iteration feed_data made the pair of
        done = time.perf_counter()
        return read - start, fed - read, done - fed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=4, help='steps per arm in each round')
    parser.add_argument('--repeats', type=int, default=3, help='rounds (the table shows the median round)')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import gtplus_models  # noqa: F401  (registers every gtplus component)
    from basicsr.archs import build_network
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        data = write_data(folder)
        prepared = time.perf_counter() - start
        torch.manual_seed(0)
        vqvae_weights = os.path.join(folder, 'vqvae2_random.pth')
        torch.save({'params': build_network(dict(VQVAE2)).state_dict()}, vqvae_weights)
        arms = {name: Arm(*build_arm(folder, data, synth, vqvae_weights)) for name, synth in SYNTHESIZERS.items()}
        for arm in arms.values():
            arm.step()  # untimed: first allocations, the LMDB environment opening
        rounds = {name: [] for name in arms}  # name -> per round: mean (read, feed, optimize) seconds
        for _ in range(args.repeats):
            parts = {name: [] for name in arms}
            for _ in range(args.iters):  # one step of each arm in turn: a change of load hits every arm alike
                for name, arm in arms.items():
                    parts[name].append(arm.step())
            for name, steps in parts.items():
                rounds[name].append([statistics.fmean(column) for column in zip(*steps)])
    rows = []
    for name, values in rounds.items():
        parts = [statistics.median(column) for column in zip(*values)]  # each part: median of its round means
        rows.append((name, sum(parts), parts))
    base = rows[0][1]
    width = max(len(name) for name, _, _ in rows)
    print(f'Training step, EDSR x4 (64 features, 8 blocks), batch {BATCH}, {GT_SIZE}^2 HR crops of {PHOTO_SIZE}^2 '
          f'photos, LMDB read in the training process, {args.threads} threads, CPU; median of {args.repeats} rounds '
          f'of {args.iters} steps per arm, steps interleaved (data prepared in {prepared:.0f} s)')
    base_optimize = rows[0][2][2]
    print(f'| {"arm":<{width}} | {"s / iter":>8} | {"loader ms":>9} | {"feed_data ms":>12} | {"optimize ms":>11} '
          f'| {"x SRModel":>9} | {"x SRModel, its optimize":>23} |')
    print(f'| {"-" * width} | {"-" * 8} | {"-" * 9} | {"-" * 12} | {"-" * 11} | {"-" * 9} | {"-" * 23} |')
    for name, seconds, (read, feed, optimize) in rows:
        print(f'| {name:<{width}} | {seconds:8.3f} | {read * 1e3:9.1f} | {feed * 1e3:12.1f} | {optimize * 1e3:11.1f} '
              f'| {seconds / base:9.2f} | {(read + feed + base_optimize) / base:23.2f} |')
    print('x SRModel: step time relative to the first row (above 1: slower). feed_data of the SynthesizedSRModel '
          'arms is the synthesis of the LQ batch. x SRModel, its optimize: the same ratio with SRModel\'s '
          'optimize_parameters time in place of the arm\'s (every arm optimizes the same network on batches of the '
          'same sizes, so their optimize times differ only by machine noise).')


if __name__ == '__main__':
    main()
