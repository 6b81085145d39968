"""Data loading throughput: gtplus LMDB dataset vs basicsr's LMDB and disk (PNG folder) backends vs tensors in memory.

The embedded sample photos are cut into square patches, written once as a PNG folder and once as an LMDB (the gtplus
writer), and each loader runs side by side in this one process tree with the same DataLoader settings (2 workers,
persistent, one warm-up epoch). Prints a Markdown table: images/s and the ratio to the in-memory loader.

Usage:
    python benchmarks/bench_lmdb_loader.py [--patch 96] [--epochs 3] [--batch 16] [--workers 2]
"""
import argparse
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm


class InMemoryDataset(Dataset):
    """The decoded patches as ready tensors: the upper bound of any loader."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors)

    def __getitem__(self, index):
        return {'gt': self.tensors[index], 'gt_path': str(index)}


def write_patches(root, patch):
    """Cut the sample photos into ``patch``-sized tiles; write them as a PNG folder and an LMDB.

    Returns:
        tuple[str, str, list[torch.Tensor]]: folder, LMDB path, the tiles as Tensor[3, patch, patch] RGB [0,1].
    """
    from gtplus_data.image_source import ImageSource, close_lmdb_readonly
    from gtplus_data.image_util import encode_png
    from gtplus_data.lmdb_writer import write_images
    from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
    folder, lmdb_path = os.path.join(root, 'patches'), os.path.join(root, 'patches.lmdb')
    os.makedirs(folder)
    tiles = {}
    for name in sample_photo_names():
        img = load_sample_photo(name)
        for top in range(0, img.shape[0] - patch + 1, patch):
            for left in range(0, img.shape[1] - patch + 1, patch):
                tiles[f'{name}_{top:04d}_{left:04d}'] = img[top:top + patch, left:left + patch]
    for key, tile in tiles.items():
        with open(os.path.join(folder, f'{key}.png'), 'wb') as f:
            f.write(encode_png(tile))
    write_images(lmdb_path, tiles.items(), total=len(tiles), desc='patches -> lmdb')
    source = ImageSource(lmdb_path)
    tensors = [torch.from_numpy(source.read(key).transpose(2, 0, 1).copy()) for key in source.keys]
    close_lmdb_readonly(lmdb_path)  # else forked workers inherit it, and basicsr's own reader may not reopen it
    return folder, lmdb_path, tensors


def throughput(dataset, batch, workers, epochs):
    """Images per second over ``epochs`` epochs after one warm-up epoch (workers started, caches warm)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                        drop_last=False)
    for _ in loader:  # warm-up
        pass
    start = time.perf_counter()
    count = 0
    for _ in range(epochs):
        for data in loader:
            count += next(iter(data.values())).shape[0]
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--patch', type=int, default=96)
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--workers', type=int, default=2)
    args = parser.parse_args()

    from basicsr.data import build_dataset

    import gtplus_data  # noqa: F401  (registers the gtplus datasets)
    with tempfile.TemporaryDirectory() as root:
        folder, lmdb_path, tensors = write_patches(root, args.patch)
        gtplus_opt = {'name': 'bench', 'phase': 'val', 'type': 'GTPlusSingleHRDataset'}
        basicsr_opt = {'name': 'bench', 'phase': 'val', 'type': 'SingleImageDataset'}
        loaders = {
            'in-memory tensors': InMemoryDataset(tensors),
            'gtplus LMDB (GTPlusSingleHRDataset)': build_dataset(
                dict(gtplus_opt, dataroot_gt=lmdb_path, io_backend={'type': 'lmdb'})),
            'basicsr LMDB (SingleImageDataset)': build_dataset(
                dict(basicsr_opt, dataroot_lq=lmdb_path, io_backend={'type': 'lmdb'})),
            'basicsr disk, PNG folder (SingleImageDataset)': build_dataset(
                dict(basicsr_opt, dataroot_lq=folder, io_backend={'type': 'disk'})),
        }
        rates = {name: throughput(dataset, args.batch, args.workers, args.epochs)
                 for name, dataset in tqdm(loaders.items(), desc='loaders')}
    base = rates['in-memory tensors']
    lines = [f'{len(tensors)} patches of {args.patch}x{args.patch} from the sample photos, batch {args.batch}, '
             f'{args.workers} workers, {args.epochs} epochs after a warm-up, {os.cpu_count()} CPU cores', '',
             '| loader | images/s | ratio to in-memory |', '|---|---:|---:|']
    lines += [f'| {name} | {rate:,.0f} | {rate / base:.3f} |' for name, rate in rates.items()]
    print('\n'.join(lines))  # a benchmark script's output is its table


if __name__ == '__main__':
    main()
