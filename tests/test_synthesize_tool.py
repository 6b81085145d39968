"""``gtplus synthesize`` and ``gtplus degradation-report``: pair layout, seeds that survive sharding and resuming,
provenance, refusals; CIEDE2000 against published and hand-computed values; the diversity ranking."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

from gtplus_data.degradations import key_seed
from gtplus_data.image_source import ImageSource
from gtplus_data.lmdb_writer import LmdbWriter
from gtplus_models.tools.synthesize import SIDE_FILE_NAME, bicubic_down, snapshot_epoch, synthesize, weights_record

SYNTH = {'type': 'RealESRGANSynthesizer', 'scale': 2, 'preset': 'stablesr'}
HR_SIZES = [(50, 38), (44, 44), (41, 53), (40, 46)]  # (h, w): odd sides are cropped to the scale


@pytest.fixture(scope='module', autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope='module')
def hr_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('hr')
    rng = np.random.RandomState(0)
    for i, (h, w) in enumerate(HR_SIZES):
        coarse = rng.rand(h // 4, w // 4, 3).astype(np.float32)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        cv2.imwrite(str(folder / f'img{i}.png'), (img * 255).round().astype(np.uint8))
    return str(folder)


def lmdb_bytes(path):
    source = ImageSource(str(path))
    with open(os.path.join(str(path), 'meta_info.txt')) as f:
        meta = f.read()
    return meta, {key: source.read_bytes(key) for key in source.keys}


def pair_bytes(prefix):
    """Everything a run writes that must not depend on how it ran: both LMDBs and the side file."""
    with open(f'{prefix}_lq.lmdb/{SIDE_FILE_NAME}.json') as f:
        side = f.read()
    return lmdb_bytes(f'{prefix}_lq.lmdb'), lmdb_bytes(f'{prefix}_gt.lmdb'), side


def test_pairs_shapes_keys_and_provenance(hr_dir, tmp_path):
    written = synthesize(hr_dir, str(tmp_path / 'p'), dict(SYNTH), seed=3)
    assert written == [str(tmp_path / 'p_lq.lmdb'), str(tmp_path / 'p_gt.lmdb'),
                       str(tmp_path / 'p_lq.lmdb' / 'preview.png')]
    hr, lq, gt = (ImageSource(p) for p in (hr_dir, *written[:2]))
    assert lq.keys == gt.keys == hr.keys == [f'img{i}' for i in range(len(HR_SIZES))]
    for key, (h, w) in zip(hr.keys, HR_SIZES):
        assert gt.read(key).shape == (h // 2 * 2, w // 2 * 2, 3)
        np.testing.assert_array_equal(gt.read(key), hr.read(key)[:h // 2 * 2, :w // 2 * 2])  # top-left crop
        assert lq.read(key).shape == (h // 2, w // 2, 3)
    with open(tmp_path / 'p_lq.lmdb' / 'synthesis.json') as f:
        side = json.load(f)
    assert side['format'] == 'gtplus-side-file-1'
    (synth_id, entry), = side['synthesizers'].items()
    assert entry['weights'] is None
    assert entry['provenance']['type'] == 'RealESRGANSynthesizer' and entry['provenance']['scale'] == 2
    assert entry['provenance']['noise_range'] == [1, 15]  # the stablesr preset's first-stage noise, written out
    assert sorted(side['records']) == lq.keys
    assert side['records']['img1'] == {'hr_key': 'img1', 'variant': 0, 'base_seed': 3,
                                       'seed': key_seed(3, 'img1/synth/v0'), 'synthesizer': 'RealESRGANSynthesizer',
                                       'synthesizer_id': synth_id, 'epoch': None, 'weights_sha256': None}
    # The record rebuilds the synthesizer, and its seed remakes the LQ byte for byte.
    from gtplus_arch.synthesizer_arch import build_synthesizer
    from gtplus_data.image_util import encode_png, image_to_tensor, tensor_to_image
    synth = build_synthesizer(entry['provenance'])
    generator = torch.Generator().manual_seed(side['records']['img1']['seed'])
    remade = tensor_to_image(synth(image_to_tensor(gt.read('img1')), generator=generator))
    assert encode_png(remade) == lq.read_bytes('img1')


def interrupt_after(monkeypatch, count):
    """Make the LMDB writer raise KeyboardInterrupt at its ``count``-th new image (a user's Ctrl-C)."""
    original, puts = LmdbWriter.put_bytes, []

    def put_bytes(self, key, data, shape=None):
        if not self.has(key):
            puts.append(key)
            if len(puts) > count:
                raise KeyboardInterrupt
        return original(self, key, data, shape)

    monkeypatch.setattr(LmdbWriter, 'put_bytes', put_bytes)


def test_plain_sharded_and_resumed_runs_write_the_same_bytes(hr_dir, tmp_path, monkeypatch):
    args = {'synth_opt': dict(SYNTH), 'seed': 7, 'variants': 2}
    synthesize(hr_dir, str(tmp_path / 'plain'), **args)
    plain = pair_bytes(tmp_path / 'plain')
    assert len(plain[0][1]) == 2 * len(HR_SIZES)

    for rank in (0, 1):
        written = synthesize(hr_dir, str(tmp_path / 'sharded'), rank=rank, world_size=2, **args)
        assert written[0].endswith(f'shards/rank{rank}of2.lmdb') and len(written) == 2  # no preview before merge
    synthesize(hr_dir, str(tmp_path / 'sharded'), merge=True, **args)
    assert pair_bytes(tmp_path / 'sharded') == plain
    assert not os.path.exists(tmp_path / 'sharded_lq.lmdb' / 'shards')
    assert (tmp_path / 'sharded_lq.lmdb' / 'preview.png').exists()

    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        synthesize(hr_dir, str(tmp_path / 'resumed'), **args)
    monkeypatch.undo()
    assert not (tmp_path / 'resumed_lq.lmdb' / 'meta_info.txt').exists()  # incomplete, and says so
    assert (tmp_path / 'resumed_lq.lmdb' / 'synthesis.json').exists()  # what a resumed run is checked against
    with pytest.raises(ValueError, match='synthesis.json records another synthesizer, weights or seed'):
        synthesize(hr_dir, str(tmp_path / 'resumed'), **dict(args, seed=8))
    synthesize(hr_dir, str(tmp_path / 'resumed'), **args)
    assert pair_bytes(tmp_path / 'resumed') == plain

    synthesize(hr_dir, str(tmp_path / 'other'), **dict(args, seed=8))
    other = pair_bytes(tmp_path / 'other')
    assert other[1] == plain[1]  # the same GT
    assert all(other[0][1][key] != plain[0][1][key] for key in plain[0][1])  # every LQ differs


def test_variants_differ_and_variant_0_is_the_single_pair(hr_dir, tmp_path):
    synthesize(hr_dir, str(tmp_path / 'one'), dict(SYNTH), seed=1, preview=0)
    synthesize(hr_dir, str(tmp_path / 'two'), dict(SYNTH), seed=1, variants=2, preview=1)
    one, two = ImageSource(str(tmp_path / 'one_lq.lmdb')), ImageSource(str(tmp_path / 'two_lq.lmdb'))
    gt_one, gt_two = ImageSource(str(tmp_path / 'one_gt.lmdb')), ImageSource(str(tmp_path / 'two_gt.lmdb'))
    assert two.keys == gt_two.keys == sorted(f'{key}_v{i}' for key in one.keys for i in (0, 1))
    for key in one.keys:
        assert two.read_bytes(f'{key}_v0') != two.read_bytes(f'{key}_v1')
        assert two.read_bytes(f'{key}_v0') == one.read_bytes(key)
        assert gt_two.read_bytes(f'{key}_v0') == gt_two.read_bytes(f'{key}_v1') == gt_one.read_bytes(key)
    with open(tmp_path / 'two_lq.lmdb' / 'synthesis.json') as f:
        records = json.load(f)['records']
    assert records['img2_v1']['hr_key'] == 'img2' and records['img2_v1']['variant'] == 1
    assert not (tmp_path / 'one_lq.lmdb' / 'preview.png').exists()


def test_complete_outputs_are_refused_unless_overwrite(hr_dir, tmp_path):
    synthesize(hr_dir, str(tmp_path / 'p'), {'type': 'BicubicSynthesizer', 'scale': 2}, seed=0, preview=0)
    with pytest.raises(FileExistsError, match='p_lq.lmdb'):
        synthesize(hr_dir, str(tmp_path / 'p'), {'type': 'BicubicSynthesizer', 'scale': 2}, seed=0)
    synthesize(hr_dir, str(tmp_path / 'p'), dict(SYNTH), seed=0, overwrite=True, preview=0)
    with open(tmp_path / 'p_lq.lmdb' / 'synthesis.json') as f:
        (entry, ) = json.load(f)['synthesizers'].values()
    assert entry['provenance']['type'] == 'RealESRGANSynthesizer'


def test_weights_record_and_epoch(tmp_path):
    path = tmp_path / 'net_g_epoch8.pth'
    torch.save({'params': {'w': torch.zeros(2)}}, path)
    record = weights_record(str(path))
    import hashlib
    assert record == {'path': str(path), 'size': path.stat().st_size, 'epoch': 8,
                      'sha256': hashlib.sha256(path.read_bytes()).hexdigest()}
    torch.save({'params': {'w': torch.zeros(2)}, 'epoch': 16}, tmp_path / 'snapshot.pth')
    assert weights_record(str(tmp_path / 'snapshot.pth'))['epoch'] == 16
    torch.save({'params': {'w': torch.zeros(2)}}, tmp_path / 'plain.pth')
    assert weights_record(str(tmp_path / 'plain.pth'))['epoch'] is None
    assert snapshot_epoch('vqvae2_Epoch_4.pth') == 4 and snapshot_epoch('x.pth', {'epoch': 32}) == 32


def test_cli_writes_pairs_that_basicsr_reads(hr_dir, tmp_path):
    from basicsr.data.paired_image_dataset import PairedImageDataset

    from gtplus_models.cli import main
    (tmp_path / 'synth.yml').write_text(yaml.safe_dump({'network_synth': dict(SYNTH)}))
    assert main(['synthesize', hr_dir, str(tmp_path / 'p'), '--synth-opt', str(tmp_path / 'synth.yml'),
                 '--seed', '0', '--preview', '0']) == 0
    dataset = PairedImageDataset({'dataroot_gt': str(tmp_path / 'p_gt.lmdb'),
                                  'dataroot_lq': str(tmp_path / 'p_lq.lmdb'), 'io_backend': {'type': 'lmdb'},
                                  'phase': 'val', 'scale': 2, 'filename_tmpl': '{}'})
    item = dataset[0]
    assert item['gt'].shape[-2:] == (item['lq'].shape[-2] * 2, item['lq'].shape[-1] * 2)


def test_bicubic_down_is_matlab_imresize():
    from basicsr.utils.matlab_functions import imresize
    img = np.random.RandomState(0).rand(16, 20, 3).astype(np.float32)
    expected = (np.clip(imresize(img, 1 / 4), 0, 1) * 255).round() / 255
    np.testing.assert_allclose(bicubic_down(img, 4), expected, atol=1 / 255 + 1e-6)


# ------------------------------------------------------------------------------------------------------------ #
# degradation-report
# ------------------------------------------------------------------------------------------------------------ #

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes, supplementary test data
# and mathematical observations", Table 1: pairs 1, 2, 3, 7, 17 and 25 (Lab, Lab, ΔE00).
SHARMA_PAIRS = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
                ((50, 3.1571, -77.2803), (50, 0, -82.7485), 2.8615),
                ((50, 2.8361, -74.0200), (50, 0, -82.7485), 3.4412),
                ((50, 0, 0), (50, -1, 2), 2.3669),
                ((50, 2.5, 0), (73, 25, -18), 27.1492),
                ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644)]


def test_ciede2000_on_sharma_2005_test_pairs():
    """The Lab-level ΔE the report uses (skimage's) against the formula's published test data."""
    from skimage.color import deltaE_ciede2000
    lab1, lab2, expected = (np.array(column, np.float64) for column in zip(*SHARMA_PAIRS))
    np.testing.assert_allclose(deltaE_ciede2000(lab1, lab2), expected, atol=1e-4)


def grey_lightness(v):
    """CIE L* of the sRGB grey (v, v, v), v in [0,1], written out from the sRGB and CIELAB definitions."""
    linear = v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055)**2.4  # = Y, as R = G = B
    f = linear**(1 / 3) if linear > (6 / 29)**3 else linear / (3 * (6 / 29)**2) + 4 / 29
    return 116 * f - 16


def test_image_delta_e_of_flat_images():
    from skimage.color import deltaE_ciede2000, rgb2lab

    from gtplus_models.tools.degradation_report import delta_e_map, image_delta_e
    # Neutral greys: a* = b* = 0, so CIEDE2000 is |ΔL*| / S_L with S_L = 1 + 0.015 (L̄-50)² / sqrt(20 + (L̄-50)²).
    l1, l2 = grey_lightness(0.5), grey_lightness(0.6)
    mean = (l1 + l2) / 2
    expected = abs(l2 - l1) / (1 + 0.015 * (mean - 50)**2 / np.sqrt(20 + (mean - 50)**2))
    grey1, grey2 = np.full((4, 5, 3), 0.5), np.full((4, 5, 3), 0.6)
    assert image_delta_e(grey1, grey2) == pytest.approx(expected, abs=1e-3)
    # Flat colours: the image path (RGB in, mean over pixels) equals skimage on the two colours.
    red, orange = np.array([0.8, 0.1, 0.1]), np.array([0.9, 0.4, 0.1])
    direct = float(deltaE_ciede2000(rgb2lab(red[None, None]), rgb2lab(orange[None, None]))[0, 0])
    flat_red, flat_orange = np.broadcast_to(red, (6, 6, 3)).copy(), np.broadcast_to(orange, (6, 6, 3)).copy()
    np.testing.assert_allclose(delta_e_map(flat_red, flat_orange), direct, rtol=1e-9)
    half = flat_red.copy()
    half[:3] = orange  # half the pixels equal: the image's ΔE is the mean, half the colours' ΔE
    assert image_delta_e(flat_red, half) == pytest.approx(direct / 2)
    assert image_delta_e(flat_red, flat_red) == 0


def test_noise_estimate_and_scale_inference():
    from gtplus_models.tools.degradation_report import infer_scale, noise_sigma
    noise = np.random.RandomState(0).randn(128, 128) * 0.05
    assert noise_sigma(0.5 + noise) == pytest.approx(0.05, rel=0.05)
    assert infer_scale((64, 48, 3), (16, 12, 3), 'x') == 4
    with pytest.raises(ValueError, match="k: GT 64x48 is not an integer multiple of LQ 16x13"):
        infer_scale((64, 48, 3), (16, 13, 3), 'k')


def degraded_sets(root):
    """Three pair sets of the same 16 photo crops (64² GT, x2): bicubic (no degradation), one fixed blur + noise +
    JPEG for every image, and blur, noise and JPEG quality drawn per image."""
    from gtplus_data.degradations import gaussian_blur, gaussian_noise, jpeg, resize
    from gtplus_data.lmdb_writer import write_images
    from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
    crops = []
    for name in sample_photo_names():
        img = load_sample_photo(name).astype(np.float32) / 255.
        crops += [img[img.shape[0] // 3 * i + 10:][:64, img.shape[1] // 3:][:, :64] for i in (0, 1)]

    def degrade(img, blur, noise, quality, seed):
        low = gaussian_noise(resize(gaussian_blur(img, blur), 32, 32), noise, np.random.RandomState(seed))
        return jpeg(low, quality)

    rng = np.random.RandomState(0)
    sets = {'bicubic': [bicubic_down(c, 2) for c in crops],
            'fixed': [degrade(c, 1.0, 6, 50, i) for i, c in enumerate(crops)],
            'random': [degrade(c, rng.uniform(0, 2.5), rng.uniform(0, 20), rng.uniform(20, 95), i)
                       for i, c in enumerate(crops)]}
    for name, lqs in sets.items():
        write_images(str(root / f'{name}_lq.lmdb'), [(f'k{i:02d}', lq) for i, lq in enumerate(lqs)])
        write_images(str(root / f'{name}_gt.lmdb'), [(f'k{i:02d}', c) for i, c in enumerate(crops)])
    return [str(root / name) for name in sets]


def test_report_ranks_one_fixed_degradation_below_random_ones(tmp_path):
    from gtplus_models.cli import main
    prefixes = degraded_sets(tmp_path)
    assert main(['degradation-report', *prefixes, '--out', str(tmp_path / 'report'), '--samples', '2']) == 0
    assert sorted(os.listdir(tmp_path / 'report')) == ['delta_e_hist.png', 'report.json', 'report.md',
                                                        'samples.png']
    with open(tmp_path / 'report' / 'report.json') as f:
        report = json.load(f)
    sets = {s['name']: s for s in report['sets']}
    assert [s['name'] for s in report['sets']] == ['bicubic', 'fixed', 'random']  # the order given
    diversity = {name: s['diversity']['normalised_entropy'] for name, s in sets.items()}
    assert diversity['bicubic'] == 0  # every image the same (no) degradation: one cluster
    assert diversity['fixed'] + 0.15 < diversity['random'] <= 1
    assert sets['bicubic']['delta_e']['mean'] == 0 < sets['fixed']['delta_e']['mean']
    assert sets['random']['scale'] == 2 and sets['random']['pairs'] == 16
    assert len(sets['fixed']['delta_e']['per_image']) == 16
    assert sum(sets['random']['diversity']['cluster_counts']) == 16
    with open(tmp_path / 'report' / 'report.md') as f:
        markdown = f.read()
    assert '| | bicubic | fixed | random |' in markdown and '| scale | x2 | x2 | x2 |' in markdown
