"""Training time per iteration with LMDB data (2 dataloader workers, or none) relative to in-memory tensors.

The model is the quickstart's ORNet stage (ORNet 'light' + frozen CFMG target, batch 4, 128² crops of the sample
photos with 3 GT variants): the data side reads 4 images per sample. Every arm runs the same model steps; the
in-memory arm replays batches collated beforehand, so the ratio is the cost the LMDB loader adds. The LMDB arms store
the same images in each value encoding of :mod:`gtplus_data.lmdb_writer` (PNG level 1, the default; BMP,
uncompressed) and, for PNG, with ``cache_decoded``. The BMP arms read the training crops as windows of the stored
rows (what the datasets do) and, for comparison, decode every image whole before cropping (as PNG must). The
"ready samples" arm is the same 2-worker DataLoader serving samples made beforehand: the worker processes, collate
and the transfer of batches between processes with no reading at all, i.e. the floor of every LMDB arm.

Each timed loader round starts a fresh iterator and first takes 2 batches untimed: forking the workers and their
first batch are paid once per epoch in training (basicsr makes one iterator per epoch), not once per 40 steps.
The two "0 workers" arms read in the training process (``num_worker_per_gpu: 0``): no processes, no transfer, but
the reading is no longer parallel to the step, so only a cheap read (BMP crop windows) pays off.

    python benchmarks/bench_train_iter.py [--iters 30]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch


# arm name -> (encoding, PNG compress level) of its LMDBs
ENCODINGS = {'PNG': ('png', 1), 'BMP': ('bmp', 0)}
WARMUP_BATCHES = 2  # per loader round, untimed: the workers' fork and first batch (paid once per epoch)


def write_data(folder, encoding='png', compress_level=1):
    """The GT and x2/x3/x4 variant LMDBs (8 photos, 256²) in one encoding; returns ({name: path}, bytes / pixel)."""
    from gtplus_data.image_source import ImageSource
    from gtplus_data.lmdb_writer import write_images
    from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
    photos = {name: load_sample_photo(name)[:256, :256].astype(np.float32) / 255. for name in sample_photo_names()}
    folder = os.path.join(folder, f'{encoding}{compress_level}')
    common = dict(compress_level=compress_level, encoding=encoding)
    paths = {'gt': os.path.join(folder, 'gt.lmdb')}
    write_images(paths['gt'], sorted(photos.items()), desc='gt', **common)
    for scale in (2, 3, 4):
        paths[f'x{scale}'] = os.path.join(folder, f'sr_x{scale}.lmdb')
        write_images(paths[f'x{scale}'], sorted((k, np.clip(v * (1 + 0.01 * scale), 0, 1)) for k, v in photos.items()),
                     desc=f'x{scale}', **common)
    source = ImageSource(paths['gt'])
    stored = sum(len(source.read_bytes(key)) for key in source.keys)
    return paths, stored / sum(photo.shape[0] * photo.shape[1] for photo in photos.values())


def build(folder, paths):
    """The ORNet-light model and a PNG LMDB loader (whose batches the in-memory arm replays)."""
    from basicsr.archs import build_network
    from basicsr.models import build_model
    cfmg_opt = {'type': 'CFMG', 'num_sources': 4, 'width': 32}
    torch.save({'params': build_network(dict(cfmg_opt)).state_dict()}, os.path.join(folder, 'cfmg.pth'))
    opt = {'name': 'bench', 'model_type': 'ORNetModel', 'num_gpu': 0, 'is_train': True, 'dist': False, 'rank': 0,
           'world_size': 1, 'ornet_input': 'gt', 'network_g': {'type': 'ORNet', 'preset': 'light'},
           'network_cfmg': cfmg_opt,
           'path': {'pretrain_network_cfmg': os.path.join(folder, 'cfmg.pth'), 'models': folder,
                    'training_states': folder},
           'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-4}, 'scheduler': {'type': 'MultiStepLR',
                                                                           'milestones': [10**6]},
                     'pixel_opt': {'type': 'L1Loss'}}}
    return build_model(opt), build_loader(paths)


def build_loader(paths, cache_decoded=False, windows=True, workers=2):
    """basicsr's training loader (EnlargedSampler, ``workers`` processes; 0: samples read in the training process)
    over the LMDBs; ``windows=False``: every image decoded whole before cropping, even where the dataset would read
    windows (BMP)."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler

    from gtplus_data.paired_variants_dataset import GTPlusPairedVariantsDataset

    class WholeImageDecode(GTPlusPairedVariantsDataset):  # not registered: only this benchmark uses it
        def _read_crop_windows(self, *args):
            return None

    dataset_opt = {'name': 'bench', 'type': 'GTPlusPairedVariantsDataset', 'phase': 'train',
                   'dataroot_gt': paths['gt'], 'dataroot_variants': [paths['x2'], paths['x3'], paths['x4']],
                   'io_backend': {'type': 'lmdb'}, 'gt_size': 128, 'use_hflip': True, 'use_rot': True,
                   'num_worker_per_gpu': workers, 'batch_size_per_gpu': 4, 'dataset_enlarge_ratio': 100,
                   'cache_decoded': cache_decoded}
    dataset = build_dataset(dataset_opt) if windows else WholeImageDecode(dataset_opt)
    sampler = EnlargedSampler(dataset, 1, 0, dataset_opt['dataset_enlarge_ratio'])
    return build_dataloader(dataset, dataset_opt, num_gpu=0, dist=False, sampler=sampler, seed=0)


class ReadySamples:
    """Samples made beforehand, served by index (the dataset of the "ready samples" arm)."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


def ready_loader(dataset, count=64):
    """A DataLoader like basicsr's (2 workers, batch 4) over ``count`` samples of ``dataset`` made beforehand."""
    from torch.utils.data import DataLoader
    samples = ReadySamples([dataset[index % len(dataset)] for index in range(count)])
    return DataLoader(samples, batch_size=4, shuffle=False, num_workers=2, drop_last=True,
                      sampler=[index % count for index in range(100 * count)])


def steady(loader):
    """A fresh iterator over ``loader`` after its first batches (the workers' start, paid once per epoch)."""
    batches = iter(loader)
    for _ in range(WARMUP_BATCHES):
        next(batches)
    return batches


def time_sample(dataset, samples=64):
    """Seconds one process spends per dataset item (read, decode, crop, augment): the loader's CPU cost, which is
    far steadier than the step ratios on a loaded machine."""
    start = time.perf_counter()
    for index in range(samples):
        dataset[index % len(dataset)]
    return (time.perf_counter() - start) / samples


def time_steps(model, batches, iters):
    start = time.perf_counter()
    for _, batch in zip(range(iters), batches):
        model.feed_data(batch)
        model.optimize_parameters(0)
    return (time.perf_counter() - start) / iters


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--iters', type=int, default=30)
    args = parser.parse_args()
    import gtplus_models  # noqa: F401
    with tempfile.TemporaryDirectory() as folder:
        data = {name: write_data(folder, *encoding) for name, encoding in ENCODINGS.items()}
        model, loader = build(folder, data['PNG'][0])
        loader_iter = iter(loader)
        in_memory = [next(loader_iter) for _ in range(args.iters)]
        del loader_iter  # its workers would otherwise idle beside the timed ones
        time_steps(model, in_memory[:3], 3)  # warm-up
        # arm name -> (batches: a list or a DataLoader, re-iterated every round; stored bytes per pixel)
        arms = {'in-memory tensors': (in_memory, None),
                '2 workers serving ready samples (no reading)': (ready_loader(loader.dataset), None),
                'LMDB PNG, 2 workers': (loader, data['PNG'][1]),
                'LMDB BMP, 2 workers, whole-image decode': (build_loader(data['BMP'][0], windows=False),
                                                            data['BMP'][1]),
                'LMDB BMP, 2 workers, crop windows': (build_loader(data['BMP'][0]), data['BMP'][1]),
                'LMDB PNG, 2 workers, cache_decoded': (build_loader(data['PNG'][0], cache_decoded=True),
                                                       data['PNG'][1]),
                # Reads cheap enough to do in the training process: no worker processes to compete for the cores.
                'LMDB BMP, crop windows, 0 workers': (build_loader(data['BMP'][0], workers=0), data['BMP'][1]),
                'LMDB PNG, 0 workers': (build_loader(data['PNG'][0], workers=0), data['PNG'][1])}
        rows, samples = [], []
        for _ in range(2):  # interleave the arms: this machine is shared and noisy
            for name, (batches, _) in arms.items():
                rows.append((name, time_steps(model, batches if isinstance(batches, list) else steady(batches),
                                              args.iters)))
                print(f'{name}: {rows[-1][1]:.3f} s / iter', file=sys.stderr, flush=True)  # progress on a slow machine
            samples += [(name, time_sample(batches.dataset)) for name, (batches, _) in arms.items()
                        if name != 'in-memory tensors']
    best = {name: min(t for n, t in rows if n == name) for name in arms}
    sample = {name: min(t for n, t in samples if n == name) for name, _ in samples}
    memory = best['in-memory tensors']
    print(f'ORNet-light training step (batch 4, 128², frozen CFMG target), {args.iters} iterations, best of 2, '
          f'{torch.get_num_threads()} threads')
    print('| data | stored bytes / pixel | loader CPU / sample (ms) | s / iter | × in-memory |')
    print('| --- | --- | --- | --- | --- |')
    for name, seconds in best.items():
        stored = '–' if arms[name][1] is None else f'{arms[name][1]:.2f}'
        cpu = f'{sample[name] * 1e3:.2f}' if name in sample else '–'
        print(f'| {name} | {stored} | {cpu} | {seconds:.3f} | {seconds / memory:.2f} |')


if __name__ == '__main__':
    main()
