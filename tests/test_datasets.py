"""The registered gtplus datasets: paired + variants, scored, single HR; LMDB and folders; basicsr dataloaders."""
import pickle

import numpy as np
import pytest
import torch
from data_helpers import make_folder

from gtplus_data.image_source import ImageSource
from gtplus_data.lmdb_writer import write_images
from gtplus_data.side_file import write_side_file


def to_lmdb(folder, out):
    source = ImageSource(folder)
    write_images(str(out), ((key, source.read(key)) for key in source.keys))
    return str(out)


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    """GT 24x32, LQ (x2) 12x16, and a GT-size variant identical to GT, as folders and LMDBs (6 keys)."""
    tmp = tmp_path_factory.mktemp('data')
    gt, _ = make_folder(tmp / 'GT', num=6, height=24, width=32)
    lq, _ = make_folder(tmp / 'LQ', num=6, height=12, width=16, seed=100)
    return {'gt': gt, 'lq': lq, 'gt_lmdb': to_lmdb(gt, tmp / 'gt.lmdb'), 'lq_lmdb': to_lmdb(lq, tmp / 'lq.lmdb'),
            'var_lmdb': to_lmdb(gt, tmp / 'var.lmdb'), 'tmp': tmp}


def train_opt(**opt):
    base = {'name': 'toy', 'phase': 'train', 'io_backend': {'type': 'lmdb'}, 'gt_size': 8, 'use_hflip': True,
            'use_rot': True, 'scale': 2, 'num_worker_per_gpu': 2, 'batch_size_per_gpu': 3,
            'dataset_enlarge_ratio': 1}
    base.update(opt)
    return base


def test_registered_after_basicsr_without_collisions():
    import basicsr  # noqa: F401
    from basicsr.utils.registry import DATASET_REGISTRY

    import gtplus_arch  # noqa: F401
    import gtplus_data  # noqa: F401
    import gtplus_models  # noqa: F401
    for name in ('GTPlusPairedVariantsDataset', 'GTPlusScoredImageDataset', 'GTPlusSingleHRDataset'):
        assert name in DATASET_REGISTRY


def test_dataloader_with_two_workers_reads_lmdbs(roots):
    from basicsr.data import build_dataloader, build_dataset
    opt = train_opt(type='GTPlusPairedVariantsDataset', dataroot_gt=roots['gt_lmdb'], dataroot_lq=roots['lq_lmdb'],
                    dataroot_variants=[roots['var_lmdb'], roots['var_lmdb']])
    dataset = build_dataset(opt)
    assert dataset[0]['gt'].shape == (3, 8, 8)  # the parent reads too: forked workers share its read-only env
    loader = build_dataloader(dataset, opt, num_gpu=0, dist=False, sampler=None, seed=0)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert batch['gt'].shape == (3, 3, 8, 8) and batch['lq'].shape == (3, 3, 4, 4)
    assert batch['variants'].shape == (3, 2, 3, 8, 8) and batch['gt'].dtype == torch.float32
    assert 0 <= batch['gt'].min() and batch['gt'].max() <= 1
    # The variants are the GT itself here, so identical cropping and flipping makes them equal.
    assert torch.equal(batch['variants'][:, 0], batch['gt']) and torch.equal(batch['variants'][:, 1], batch['gt'])
    assert sorted(k for b in batches for k in b['gt_path']) == [f'{i:03d}' for i in range(6)]


def test_lq_crop_matches_gt_crop(roots, tmp_path):
    import cv2
    from basicsr.data import build_dataset
    down = tmp_path / 'LQdown'
    down.mkdir()
    source = ImageSource(roots['gt'])
    for key in source.keys:  # LQ = GT subsampled by 2, so a matching crop subsamples the GT crop
        cv2.imwrite(str(down / f'{key}.png'), (source.read(key)[::2, ::2, ::-1] * 255).round().astype(np.uint8))
    dataset = build_dataset(train_opt(type='GTPlusPairedVariantsDataset', dataroot_gt=roots['gt'],
                                      dataroot_lq=str(down), io_backend={'type': 'disk'}))
    for index in range(len(dataset)):
        item = dataset[index]
        assert item['gt_path'].endswith(f'{index:03d}.png') and 'variants' not in item
        # rot90/flip of a 2x subsampling keeps the parity only up to one pixel: compare against both phases.
        gt = item['gt']
        assert any(torch.equal(item['lq'], gt[:, dy::2, dx::2]) for dy in (0, 1) for dx in (0, 1))


def test_lq_less_mode_returns_gt_and_variants(roots):
    from basicsr.data import build_dataset
    dataset = build_dataset(train_opt(type='GTPlusPairedVariantsDataset', dataroot_gt=roots['gt_lmdb'],
                                      dataroot_lq=None, dataroot_variants=[roots['var_lmdb']]))
    item = dataset[1]
    assert sorted(item) == ['gt', 'gt_path', 'lq_path', 'variant_paths', 'variants'] and item['lq_path'] == '001'
    assert torch.equal(item['variants'][0], item['gt'])


def test_validation_phase_keeps_full_images(roots):
    from basicsr.data import build_dataset
    item = build_dataset(train_opt(type='GTPlusPairedVariantsDataset', phase='val', dataroot_gt=roots['gt_lmdb'],
                                   dataroot_lq=roots['lq_lmdb']))[0]
    assert item['gt'].shape == (3, 24, 32) and item['lq'].shape == (3, 12, 16) and item['lq_path'] == '000'


def test_key_mismatch_and_backend_mismatch_are_named(roots, tmp_path):
    from basicsr.data import build_dataset
    few, _ = make_folder(tmp_path / 'few', num=4, height=24, width=32)
    with pytest.raises(ValueError, match=r'2 key\(s\) only in gt .*: 004, 005'):
        build_dataset(train_opt(type='GTPlusPairedVariantsDataset', dataroot_gt=roots['gt'], dataroot_lq=None,
                                dataroot_variants=[few], io_backend={'type': 'disk'}))
    with pytest.raises(ValueError, match='io_backend is lmdb but gt root is not an LMDB'):
        build_dataset(train_opt(type='GTPlusSingleHRDataset', dataroot_gt=roots['gt']))


def test_scored_dataset_reads_scores_from_side_file(roots, tmp_path):
    from basicsr.data import build_dataset
    scored = to_lmdb(roots['gt'], tmp_path / 'scored.lmdb')
    write_side_file(scored, 'quality_scores', {f'{i:03d}': {'musiq': i / 10} for i in range(6)}, 'musiq / 100')
    dataset = build_dataset(train_opt(type='GTPlusScoredImageDataset', dataroot_gt=scored, score_name='musiq'))
    item = dataset[3]
    assert item['gt'].shape == (3, 8, 8) and item['gt_path'] == '003'
    assert item['score'].dtype == torch.float32 and item['score'].item() == pytest.approx(0.3)
    write_side_file(scored, 'partial', {'000': {'ensemble': 1.0}}, 'only one')
    with pytest.raises(ValueError, match=r"5 image\(s\) .* have no 'ensemble' in side file 'partial': 001, 002"):
        build_dataset(train_opt(type='GTPlusScoredImageDataset', dataroot_gt=scored, score_file='partial'))


def test_single_hr_dataset_opens_lazily_and_pickles(roots, tmp_path):
    import os

    from basicsr.data import build_dataset

    from gtplus_data import image_source
    fresh = to_lmdb(roots['gt'], tmp_path / 'fresh.lmdb')
    dataset = build_dataset(train_opt(type='GTPlusSingleHRDataset', dataroot_gt=fresh, gt_size=16))
    assert os.path.realpath(fresh) not in image_source._READ_ENVS  # not opened in __init__
    first = dataset[0]
    assert os.path.realpath(fresh) in image_source._READ_ENVS
    assert sorted(first) == ['gt', 'gt_path'] and first['gt'].shape == (3, 16, 16)
    clone = pickle.loads(pickle.dumps(dataset))  # spawn-style workers get no open LMDB handle
    assert clone[5]['gt_path'] == '005'
    with pytest.raises(ValueError, match='smaller than gt_size 64'):
        build_dataset(train_opt(type='GTPlusSingleHRDataset', dataroot_gt=fresh, gt_size=64))[0]


def test_cache_decoded_gives_the_same_samples_and_keeps_the_cache_intact(roots):
    import random

    from basicsr.data import build_dataset
    opts = dict(type='GTPlusPairedVariantsDataset', dataroot_gt=roots['gt_lmdb'], dataroot_lq=roots['lq_lmdb'],
                dataroot_variants=[roots['var_lmdb']])
    plain = build_dataset(train_opt(**opts))
    cached = build_dataset(train_opt(**opts, cache_decoded=True))
    for repeat in range(3):  # flips and rotations run on the same cached images again and again
        for index in range(len(plain)):
            random.seed(repeat * 100 + index)
            expected = plain[index]
            random.seed(repeat * 100 + index)
            got = cached[index]
            for key in ('gt', 'lq', 'variants'):
                assert torch.equal(expected[key], got[key]), (repeat, index, key)
    assert len(cached.cache) == 3 * len(cached)  # gt, lq and one variant per key, decoded once
