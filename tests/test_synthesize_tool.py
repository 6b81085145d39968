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
from gtplus_models.tools.synthesize import (SIDE_FILE_NAME, bicubic_down, snapshot_epoch, synthesize,
                                            weights_record)

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
    args = dict(synth_opt=dict(SYNTH), seed=7, variants=2)
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
    dataset = PairedImageDataset({'dataroot_gt': str(tmp_path / 'p_gt.lmdb'), 'dataroot_lq': str(tmp_path / 'p_lq.lmdb'),
                                  'io_backend': {'type': 'lmdb'}, 'phase': 'val', 'scale': 2, 'filename_tmpl': '{}'})
    item = dataset[0]
    assert item['gt'].shape[-2:] == (item['lq'].shape[-2] * 2, item['lq'].shape[-1] * 2)


def test_bicubic_down_is_matlab_imresize():
    from basicsr.utils.matlab_functions import imresize
    img = np.random.RandomState(0).rand(16, 20, 3).astype(np.float32)
    expected = (np.clip(imresize(img, 1 / 4), 0, 1) * 255).round() / 255
    np.testing.assert_allclose(bicubic_down(img, 4), expected, atol=1 / 255 + 1e-6)
