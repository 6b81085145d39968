"""Training time per iteration with LMDB data (2 dataloader workers) relative to in-memory tensors.

The model is the quickstart's ORNet stage (ORNet 'light' + frozen CFMG target, batch 4, 128² crops of the sample
photos with 3 GT variants): the data side reads 4 images per sample. Both arms run the same model steps; the
in-memory arm replays batches collated beforehand, so the ratio is the cost the LMDB loader adds.

    python benchmarks/bench_train_iter.py [--iters 30]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch


def write_data(folder):
    from gtplus_data.lmdb_writer import write_images
    from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
    photos = {name: load_sample_photo(name)[:256, :256].astype(np.float32) / 255. for name in sample_photo_names()}
    paths = {'gt': os.path.join(folder, 'gt.lmdb')}
    write_images(paths['gt'], sorted(photos.items()), desc='gt')
    for scale in (2, 3, 4):
        paths[f'x{scale}'] = os.path.join(folder, f'sr_x{scale}.lmdb')
        write_images(paths[f'x{scale}'], sorted((k, np.clip(v * (1 + 0.01 * scale), 0, 1)) for k, v in photos.items()),
                     desc=f'x{scale}')
    return paths


def build(folder, paths):
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


def build_loader(paths, cache_decoded=False):
    """basicsr's training loader (EnlargedSampler, 2 workers) over the LMDBs."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler
    dataset_opt = {'name': 'bench', 'type': 'GTPlusPairedVariantsDataset', 'phase': 'train',
                   'dataroot_gt': paths['gt'], 'dataroot_variants': [paths['x2'], paths['x3'], paths['x4']],
                   'io_backend': {'type': 'lmdb'}, 'gt_size': 128, 'use_hflip': True, 'use_rot': True,
                   'num_worker_per_gpu': 2, 'batch_size_per_gpu': 4, 'dataset_enlarge_ratio': 100,
                   'cache_decoded': cache_decoded}
    dataset = build_dataset(dataset_opt)
    sampler = EnlargedSampler(dataset, 1, 0, dataset_opt['dataset_enlarge_ratio'])
    return build_dataloader(dataset, dataset_opt, num_gpu=0, dist=False, sampler=sampler, seed=0)


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
        paths = write_data(folder)
        model, loader = build(folder, paths)
        loader_iter = iter(loader)
        in_memory = [next(loader_iter) for _ in range(args.iters)]
        time_steps(model, in_memory[:3], 3)  # warm-up
        cached_loader = build_loader(paths, cache_decoded=True)
        rows = []
        for _ in range(2):  # interleave the arms: this machine is shared and noisy
            rows.append(('in-memory tensors', time_steps(model, in_memory, args.iters)))
            rows.append(('LMDB, 2 workers', time_steps(model, iter(loader), args.iters)))
            rows.append(('LMDB, 2 workers, cache_decoded', time_steps(model, iter(cached_loader), args.iters)))
    best = {name: min(t for n, t in rows if n == name) for name, _ in rows}
    memory = best['in-memory tensors']
    print(f'ORNet-light training step (batch 4, 128², frozen CFMG target), {args.iters} iterations, best of 2, '
          f'{torch.get_num_threads()} threads')
    print('| data | s / iter | ratio to in-memory |')
    print('| --- | --- | --- |')
    for name, seconds in best.items():
        print(f'| {name} | {seconds:.3f} | {seconds / memory:.2f} |')


if __name__ == '__main__':
    main()
