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
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model
    cfmg_opt = {'type': 'CFMG', 'num_sources': 4, 'width': 32}
    torch.save({'params': build_network(dict(cfmg_opt)).state_dict()}, os.path.join(folder, 'cfmg.pth'))
    dataset_opt = {'name': 'bench', 'type': 'GTPlusPairedVariantsDataset', 'phase': 'train',
                   'dataroot_gt': paths['gt'], 'dataroot_variants': [paths['x2'], paths['x3'], paths['x4']],
                   'io_backend': {'type': 'lmdb'}, 'gt_size': 128, 'use_hflip': True, 'use_rot': True,
                   'num_worker_per_gpu': 2, 'batch_size_per_gpu': 4, 'dataset_enlarge_ratio': 100}
    opt = {'name': 'bench', 'model_type': 'ORNetModel', 'num_gpu': 0, 'is_train': True, 'dist': False, 'rank': 0,
           'world_size': 1, 'ornet_input': 'gt', 'network_g': {'type': 'ORNet', 'preset': 'light'},
           'network_cfmg': cfmg_opt,
           'path': {'pretrain_network_cfmg': os.path.join(folder, 'cfmg.pth'), 'models': folder,
                    'training_states': folder},
           'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-4}, 'scheduler': {'type': 'MultiStepLR',
                                                                           'milestones': [10**6]},
                     'pixel_opt': {'type': 'L1Loss'}}}
    model = build_model(opt)
    dataset = build_dataset(dataset_opt)
    loader = build_dataloader(dataset, dataset_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    return model, loader


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
        model, loader = build(folder, write_data(folder))
        loader_iter = iter(loader)
        in_memory = [next(loader_iter) for _ in range(args.iters)]
        time_steps(model, in_memory[:3], 3)  # warm-up
        rows = []
        for _ in range(2):  # interleave the arms: this machine is shared and noisy
            rows.append(('in-memory tensors', time_steps(model, in_memory, args.iters)))
            rows.append(('LMDB, 2 workers', time_steps(model, iter(loader), args.iters)))
    memory = min(t for name, t in rows if name.startswith('in-memory'))
    lmdb = min(t for name, t in rows if name.startswith('LMDB'))
    print(f'ORNet-light training step (batch 4, 128², frozen CFMG target), {args.iters} iterations, best of 2, '
          f'{torch.get_num_threads()} threads')
    print('| data | s / iter | ratio to in-memory |')
    print('| --- | --- | --- |')
    print(f'| in-memory tensors | {memory:.3f} | 1.00 |')
    print(f'| LMDB, 2 workers | {lmdb:.3f} | {lmdb / memory:.2f} |')


if __name__ == '__main__':
    main()
