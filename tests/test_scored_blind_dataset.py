"""GTPlusScoredBlindDataset: GT + score from an LMDB and its `gtplus score` side file, LQ by CodeFormer's blind
degradation (presets, YAML overrides, seeding), scores normalised over the dataset, and its bad inputs."""
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from data_helpers import make_folder, random_rgb

from gtplus_data.lmdb_writer import write_images

KEYS = ['k0', 'k1', 'k2', 'k3']
NIQE = {'k0': 3., 'k1': 5., 'k2': 4., 'k3': 7.}  # lower is better
MUSIQ = {'k0': 40., 'k1': 80., 'k2': 50., 'k3': 60.}  # higher is better


def write_scores(root, raw, ensemble=True, kind='lmdb'):
    """The side file exactly as `gtplus score` writes it (scoring.build_payload + write_json at its default path),
    from raw scores instead of running pyiqa; metrics carry their direction as the pyiqa adapters do."""
    from gtplus_data.side_file import write_json
    from gtplus_models.tools.scoring import build_payload, default_paths
    names = list(next(iter(raw.values())))
    metrics = {name: SimpleNamespace(lower_better=name == 'niqe') for name in names}
    write_json(default_paths(root, kind)[0], build_payload(raw, metrics, {}, ensemble))


@pytest.fixture(scope='module')
def scored(tmp_path_factory):
    """A 4-image 24x32 LMDB with NIQE, MUSIQ and the ensemble in quality_scores.json."""
    root = str(tmp_path_factory.mktemp('blind') / 'gt.lmdb')
    write_images(root, [(key, random_rgb(i, 24, 32)) for i, key in enumerate(KEYS)])
    write_scores(root, {key: {'niqe': NIQE[key], 'musiq': MUSIQ[key]} for key in KEYS})
    return root


def build(root, **opt):
    from basicsr.data import build_dataset
    base = {'name': 'blind', 'type': 'GTPlusScoredBlindDataset', 'dataroot_gt': root, 'phase': 'train',
            'io_backend': {'type': 'lmdb'}, 'score_name': 'niqe'}
    base.update(opt)
    return build_dataset(base)


def test_registered_after_basicsr():
    import basicsr  # noqa: F401
    from basicsr.utils.registry import DATASET_REGISTRY

    import gtplus_arch  # noqa: F401
    import gtplus_data  # noqa: F401
    import gtplus_models  # noqa: F401
    assert 'GTPlusScoredBlindDataset' in DATASET_REGISTRY


def test_items_shapes_ranges_and_batches(scored):
    dataset = build(scored, gt_size=16, use_rot=True)
    item = dataset[2]
    assert sorted(item) == ['gt', 'gt_path', 'lq', 'score'] and item['gt_path'] == 'k2'
    assert item['gt'].shape == item['lq'].shape == (3, 16, 16) and item['lq'].dtype == torch.float32
    for img in (item['gt'], item['lq']):
        assert 0 <= img.min() and img.max() <= 1
    assert torch.equal((item['lq'] * 255).round() / 255, item['lq'])  # 8-bit levels, as CodeFormer's LQ
    assert (item['lq'] - item['gt']).abs().mean() > 0.01  # the large preset degrades visibly
    assert item['score'].dtype == torch.float32 and item['score'].shape == ()
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch['lq'].shape == (4, 3, 16, 16) and batch['score'].shape == (4, )
    whole = build(scored, phase='val')[0]
    assert whole['gt'].shape == whole['lq'].shape == (3, 24, 32)
    resized = build(scored, phase='val', out_size=[12, 16])[1]
    assert resized['gt'].shape == resized['lq'].shape == (3, 12, 16)
    assert build(scored, out_size=8)[0]['lq'].shape == (3, 8, 8)


def test_image_folder_with_its_side_file(tmp_path):
    folder, _ = make_folder(tmp_path / 'photos', num=3, height=20, width=20)
    write_scores(folder, {f'{i:03d}': {'musiq': 10. * i} for i in range(3)}, ensemble=False, kind='folder')
    dataset = build(folder, io_backend={'type': 'disk'}, score_name='musiq', gt_size=16)
    item = dataset[2]
    assert len(dataset) == 3 and item['gt_path'].endswith('002.png') and item['lq'].shape == (3, 16, 16)
    assert item['score'].item() == 1.
    one_line_error(r"3 key\(s\) have no 'ensemble' score .*: 000, 001, 002 \(fields recorded: musiq;", build, folder,
                   io_backend={'type': 'disk'}, score_name='ensemble')


def test_scores_normalised_over_the_dataset(scored):
    def scores(**opt):
        dataset = build(scored, phase='val', **opt)
        return [round(dataset[i]['score'].item(), 6) for i in range(len(dataset))]

    # NIQE 3, 5, 4, 7: (x - 3) / 4 = 0, .5, .25, 1, flipped (the side file records lower_better) so 1 = best.
    assert scores() == [1., .5, .75, 0.]
    assert scores(higher_is_better=True) == [0., .5, .25, 1.]
    assert scores(score_name='musiq') == [0., 1., .25, .5]  # MUSIQ 40..80, higher is better: not flipped
    # Fixed bounds [1, 9] (e.g. the training set's): NIQE 3 -> 1 - 2/8.
    assert scores(score_bounds=[1, 9]) == [.75, .5, .625, .25]
    # The ensemble (`gtplus score`'s mean of the two normalised metrics) is taken as it is.
    assert scores(score_name='ensemble') == [.5, .75, .5, .25]


def test_presets_and_yaml_overrides(scored):
    large, small = build(scored).degradation, build(scored, degradation='small').degradation
    assert large == {'blur_kernel_size': 41, 'kernel_list': ['iso', 'aniso'], 'kernel_prob': [0.5, 0.5],
                     'blur_sigma': [1., 15.], 'downsample_range': [4., 30.], 'noise_range': [0., 20.],
                     'jpeg_range': [30., 80.]}
    assert (small['blur_sigma'], small['downsample_range'], small['noise_range'], small['jpeg_range']) == \
        ([.1, 10.], [1., 12.], [0., 15.], [60., 100.])
    custom = build(scored, degradation='small', jpeg_range=[70, 95], blur_kernel_size=21, noise_range=None)
    assert custom.degradation['jpeg_range'] == [70., 95.] and custom.degradation['blur_kernel_size'] == 21
    assert custom.degradation['noise_range'] is None and custom.degradation['blur_sigma'] == [.1, 10.]
    # Overrides reach the pixels: no noise, no JPEG, a tiny blur and no downsampling leave the GT's 8-bit levels.
    gentle = build(scored, phase='val', blur_sigma=[0.1, 0.2], downsample_range=[1, 1], noise_range=None,
                   jpeg_range=None)[0]
    assert torch.allclose(gentle['lq'], gentle['gt'], atol=1.5 / 255)


def test_a_fixed_seed_reproduces_the_sample(scored):
    seeded = build(scored, gt_size=16, seed=3)
    first, again, other = seeded[1], seeded[1], build(scored, gt_size=16, seed=4)[1]
    assert torch.equal(first['lq'], again['lq']) and torch.equal(first['gt'], again['gt'])
    assert not torch.equal(first['lq'], other['lq'])
    # The fixed-seed draws leave the caller's global RNG streams where they were.
    np.random.seed(11)
    random.seed(11)
    seeded[2]
    assert (np.random.rand(), random.random()) == (np.random.RandomState(11).rand(), random.Random(11).random())
    # seed: null (train) draws from the global RNGs as basicsr does, so seeding them reproduces the sample.
    free = build(scored, gt_size=16)
    samples = []
    for _ in range(2):
        np.random.seed(5)
        random.seed(5)
        samples.append(free[0])
    assert torch.equal(samples[0]['lq'], samples[1]['lq']) and torch.equal(samples[0]['gt'], samples[1]['gt'])
    assert not torch.equal(free[0]['lq'], free[0]['lq'])  # and each draw differs when not reseeded


def one_line_error(match, func, *args, **kwargs):
    with pytest.raises(ValueError, match=match) as err:
        func(*args, **kwargs)
    assert '\n' not in str(err.value)


def test_bad_inputs_are_one_line_errors(scored, tmp_path):
    bare = str(tmp_path / 'bare.lmdb')
    write_images(bare, [(key, random_rgb(i, 24, 32)) for i, key in enumerate(KEYS)])
    one_line_error(r'score side file not found: .*bare\.lmdb/quality_scores\.json', build, bare)
    write_scores(bare, {key: {'niqe': NIQE[key]} for key in KEYS[:3]})
    one_line_error(r"1 key\(s\) have no 'niqe' score in .*quality_scores\.json: k3", build, bare)
    one_line_error(r"quality_scores\.json: the 'niqe' score of key k0 is 3\.0, outside \[0, 1\]", build, scored,
                   normalise=False)
    one_line_error(r"unknown degradation preset 'huge'", build, scored, degradation='huge')
    one_line_error(r'downsample_range must be \[low, high\]', build, scored, downsample_range=[8, 2])
    one_line_error(r'blur_sigma must be \[low, high\] with low < high', build, scored, blur_sigma=[2, 2])
    one_line_error(r'jpeg_range must be .* within \[0, 100\]', build, scored, jpeg_range=[30, 120])
    one_line_error(r'blur_kernel_size must be a positive odd integer', build, scored, blur_kernel_size=40)
