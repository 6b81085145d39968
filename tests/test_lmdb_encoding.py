"""LMDB value encodings: BMP (uncompressed, fast to decode) beside the default PNG.

A BMP LMDB must hold the same pixels as the PNG one, be read by basicsr's own LMDB backend, give bit-identical
training batches (its training crops read as windows of the stored rows, without decoding the whole image), record
its encoding in meta_info, never mix encodings (resume, put_bytes, merge), and be made by
``gtplus make-lmdb --encoding bmp``.
"""
import os
import random
import struct

import cv2
import numpy as np
import pytest
import torch
from data_helpers import lmdb_items, make_folder, random_rgb, read_text

from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import bmp_pixel_view, decode_image, encode_bmp, encode_png, pixels_to_rgb_float
from gtplus_data.lmdb_shards import merge_shards, read_lmdb_format, shard_path, write_sharded
from gtplus_data.lmdb_writer import LmdbWriter, value_shape, write_images
from gtplus_models.cli import main


def images(num=5, seed=0):
    """Odd widths on purpose: BMP pads every row to 4 bytes."""
    return {f'im{i:02d}': random_rgb(seed + i, 7 + i, 9 + 2 * i) for i in range(num)}


def both(tmp_path, imgs, name='x'):
    """The same images written as PNG and as BMP LMDBs; returns (png_path, bmp_path)."""
    paths = (str(tmp_path / f'{name}_png.lmdb'), str(tmp_path / f'{name}_bmp.lmdb'))
    for path, encoding in zip(paths, ('png', 'bmp')):
        assert write_images(path, imgs.items(), encoding=encoding) == len(imgs)
    return paths


def test_bmp_lmdb_round_trips_every_pixel_and_records_its_encoding(tmp_path):
    imgs = images()
    png, bmp = both(tmp_path, imgs)
    assert read_text(os.path.join(bmp, 'meta_info.txt')).splitlines() == [
        f'{k}.bmp ({v.shape[0]},{v.shape[1]},3) 0' for k, v in sorted(imgs.items())]
    assert read_text(os.path.join(png, 'meta_info.txt')).splitlines()[0] == 'im00.png (7,9,3) 1'  # unchanged
    assert read_lmdb_format(bmp) == ('bmp', 0) and read_lmdb_format(png) == ('png', 1)
    values = lmdb_items(bmp)
    for key, rgb in imgs.items():
        height, width = rgb.shape[:2]
        assert values[key][:2] == b'BM' and value_shape(values[key], 'bmp') == (height, width, 3)
        assert len(values[key]) == 54 + height * ((3 * width + 3) // 4 * 4)  # 3 bytes / pixel, rows padded to 4
    png_source, bmp_source = ImageSource(png), ImageSource(bmp)
    for key, rgb in imgs.items():
        got = bmp_source.read(key)  # gtplus's decode_image: RGB float32 in [0, 1]
        np.testing.assert_array_equal((got * 255).round().astype(np.uint8), rgb)
        np.testing.assert_array_equal(got, png_source.read(key))


def test_float_and_16bit_inputs_store_the_same_8bit_bmp(tmp_path):
    rgb = random_rgb(3)
    out = str(tmp_path / 'x.lmdb')
    with LmdbWriter(out, encoding='bmp', compress_level=9) as writer:  # the level means nothing to BMP
        writer.put_image('u8', rgb)
        writer.put_image('f32', rgb.astype(np.float32) / 255.)
        writer.put_image('u16', rgb.astype(np.uint16) * 257)
        writer.put_bytes('raw', encode_bmp(rgb), shape=(12, 16, 3))
        with pytest.raises(ValueError, match="key 'png': LMDB values must be BMP bytes in this database, got PNG"):
            writer.put_bytes('png', encode_png(rgb))
        with pytest.raises(ValueError, match='given shape .* but the BMP is'):
            writer.put_bytes('wrong', encode_bmp(rgb), shape=(16, 12, 3))
        assert writer.finalize() == 4
    assert len(set(lmdb_items(out).values())) == 1
    assert read_text(os.path.join(out, 'meta_info.txt')).split('\n')[0] == 'f32.bmp (12,16,3) 0'
    with pytest.raises(ValueError, match="unknown LMDB encoding 'jpg'; choose one of png, bmp"):
        LmdbWriter(str(tmp_path / 'y.lmdb'), encoding='jpg')


def test_basicsr_lmdb_backend_reads_the_bmp_database(tmp_path):
    from basicsr.data.data_util import paired_paths_from_lmdb, paths_from_lmdb
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.utils import FileClient, imfrombytes
    imgs = images()
    _, bmp = both(tmp_path, imgs)
    assert paths_from_lmdb(bmp) == sorted(imgs)  # the key is the name before the first '.'
    client = FileClient('lmdb', db_paths=[bmp], client_keys=['gt'])
    for key, rgb in imgs.items():
        bgr = imfrombytes(client.get(key, 'gt'), float32=False)  # cv2.imdecode, IMREAD_COLOR
        np.testing.assert_array_equal(bgr[:, :, ::-1], rgb)
        assert imfrombytes(client.get(key, 'gt'), float32=True).dtype == np.float32
    client.client._client['gt'].close()  # free the path for later opens in this process
    # basicsr's own paired dataset over a BMP pair (scale 1: the "LQ" is a second BMP LMDB of other images)
    lq = str(tmp_path / 'lq_bmp.lmdb')
    lq_imgs = {key: random_rgb(50 + i, *rgb.shape[:2]) for i, (key, rgb) in enumerate(imgs.items())}
    write_images(lq, lq_imgs.items(), encoding='bmp')
    assert [p['gt_path'] for p in paired_paths_from_lmdb([lq, bmp], ['lq', 'gt'])] == sorted(imgs)
    dataset = PairedImageDataset({'phase': 'val', 'scale': 1, 'dataroot_gt': bmp, 'dataroot_lq': lq,
                                  'io_backend': {'type': 'lmdb'}, 'filename_tmpl': '{}'})
    item = dataset[1]
    np.testing.assert_array_equal((item['gt'].numpy().transpose(1, 2, 0) * 255).round(), imgs['im01'])
    np.testing.assert_array_equal((item['lq'].numpy().transpose(1, 2, 0) * 255).round(), lq_imgs['im01'])
    for env in dataset.file_client.client._client.values():
        env.close()


def handmade_bmp(rgb, top_down=False, gap=0, bits=24, compression=0):
    """A 24-bit BMP written by hand (BITMAPINFOHEADER), in either row order and with ``gap`` bytes between the
    headers and the pixels; ``bits`` and ``compression`` only change the header (for refusals)."""
    height, width = rgb.shape[:2]
    row_bytes = (3 * width + 3) // 4 * 4
    rows = np.zeros((height, row_bytes), np.uint8)
    rows[:, :3 * width] = rgb[:, :, ::-1].reshape(height, 3 * width)
    rows[:, 3 * width:] = 0xAB  # padding that must never show up in pixels
    pixels = (rows if top_down else rows[::-1]).tobytes()
    offset = 54 + gap
    header = struct.pack('<2sIHHI', b'BM', offset + len(pixels), 0, 0, offset)
    info = struct.pack('<IiiHHIIiiII', 40, width, -height if top_down else height, 1, bits, compression, len(pixels),
                       2835, 2835, 0, 0)
    return header + info + b'\x55' * gap + pixels


@pytest.mark.parametrize('height, width', [(7, 9), (5, 13), (6, 1), (1, 6), (11, 10), (4, 4)])
def test_bmp_windows_equal_the_full_decode_cropped(height, width):
    """Rows padded to 4 bytes (3 * width not a multiple of 4), both row orders, a pixel offset past the header."""
    rgb = random_rgb(height * 31 + width, height, width)
    rng = np.random.RandomState(width)
    for data in [encode_bmp(rgb)] + [handmade_bmp(rgb, top_down, gap) for top_down in (False, True) for gap in (0, 6)]:
        full = decode_image(data, 'x')  # cv2.imdecode + the RGB float conversion
        np.testing.assert_array_equal((full * 255).round().astype(np.uint8), rgb)  # the handmade file is valid
        view = bmp_pixel_view(memoryview(data))
        assert view.shape == (height, width, 3) and view.dtype == np.uint8 and not view.flags.writeable
        np.testing.assert_array_equal(pixels_to_rgb_float(view, 'x'), full)
        for _ in range(10):
            top, left = rng.randint(0, height), rng.randint(0, width)
            bottom, right = rng.randint(top + 1, height + 1), rng.randint(left + 1, width + 1)
            window = pixels_to_rgb_float(view[top:bottom, left:right], 'x')
            assert window.dtype == np.float32 and window.flags.c_contiguous
            assert np.array_equal(window, full[top:bottom, left:right])


def test_bmp_pixel_view_refuses_what_it_cannot_read():
    """Everything but uncompressed 24-bit BMP is left to cv2.imdecode (None), never misread."""
    rgb = random_rgb(5, 6, 7)
    bgra = np.dstack([rgb[:, :, ::-1], np.full((6, 7), 255, np.uint8)])
    refused = {
        '32-bit': cv2.imencode('.bmp', bgra)[1].tobytes(),
        '8-bit paletted': cv2.imencode('.bmp', rgb[:, :, 0])[1].tobytes(),
        'compressed': handmade_bmp(rgb, compression=1),
        '16-bit header': handmade_bmp(rgb, bits=16),
        'truncated': encode_bmp(rgb)[:-1],
        'header only': encode_bmp(rgb)[:54],
        'png': encode_png(rgb),
        'empty': b'',
    }
    assert bytes(refused['32-bit'][28:30]) == struct.pack('<H', 32)
    assert bytes(refused['8-bit paletted'][28:30]) == struct.pack('<H', 8)
    os2 = bytearray(encode_bmp(rgb))
    os2[14:18] = struct.pack('<I', 12)  # a BITMAPCOREHEADER has 16-bit sizes at other offsets
    refused['os/2 header'] = bytes(os2)
    for kind, data in refused.items():
        assert bmp_pixel_view(data) is None, kind


def write_raw_lmdb(path, values, shapes):
    """An LMDB of arbitrary values with a BasicSR meta_info (the writer would refuse these values)."""
    import lmdb
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key.encode('ascii'), value)
    env.close()
    with open(os.path.join(path, 'meta_info.txt'), 'w') as f:
        f.writelines(f'{key}.bmp ({h},{w},3) 0\n' for key, (h, w) in sorted(shapes.items()))
    return str(path)


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    """GT 26x30, LQ (x2) 13x15 and a GT-size variant (odd widths: padded BMP rows), each as a PNG and a BMP LMDB of
    the same images; 'var32' holds the variant as 32-bit BMPs (opaque alpha), which windows cannot read."""
    tmp = tmp_path_factory.mktemp('enc')
    gt = {f'{i:03d}': random_rgb(i, 26, 30) for i in range(6)}
    lq = {f'{i:03d}': random_rgb(100 + i, 13, 15) for i in range(6)}
    var = {f'{i:03d}': random_rgb(200 + i, 26, 30) for i in range(6)}
    out = {name: dict(zip(('png', 'bmp'), both(tmp, data, name))) for name, data in
           (('gt', gt), ('lq', lq), ('var', var))}
    var32 = {key: cv2.imencode('.bmp', np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 255, np.uint8)]))[1]
             .tobytes() for key, rgb in var.items()}
    out['var32'] = {'bmp': write_raw_lmdb(tmp / 'var32.lmdb', var32, {key: (26, 30) for key in var})}
    return out


def dataset_opt(roots, encoding, **opt):
    base = {'name': 'toy', 'type': 'GTPlusPairedVariantsDataset', 'phase': 'train', 'io_backend': {'type': 'lmdb'},
            'gt_size': 8, 'use_hflip': True, 'use_rot': True, 'scale': 2, 'num_worker_per_gpu': 2,
            'batch_size_per_gpu': 3, 'dataset_enlarge_ratio': 1, 'dataroot_gt': roots['gt'][encoding],
            'dataroot_lq': roots['lq'][encoding], 'dataroot_variants': [roots['var'][encoding]]}
    base.update(opt)
    return base


def count_full_decodes(monkeypatch):
    """Count ImageSource.read calls (the full decode; windowed training crops never call it)."""
    calls = []
    original = ImageSource.read
    monkeypatch.setattr(ImageSource, 'read', lambda self, key: calls.append(key) or original(self, key))
    return calls


SAMPLE_KINDS = {  # name -> (dataset options over the BMP roots, item keys compared)
    'lq + variant': ({}, ('gt', 'lq', 'variants')),
    'lq, gt_size not a multiple of scale': ({'gt_size': 9}, ('gt', 'lq', 'variants')),
    'gt + variant': ({'dataroot_lq': None}, ('gt', 'variants')),
    'single HR': ({'type': 'GTPlusSingleHRDataset'}, ('gt', )),
}


@pytest.mark.parametrize('kind', SAMPLE_KINDS)
def test_training_samples_from_bmp_equal_those_from_png(roots, monkeypatch, kind):
    """With the windowed read active (no full decode of any BMP value), the same draws give the same tensors."""
    from basicsr.data import build_dataset
    opt, keys = SAMPLE_KINDS[kind]
    png, bmp = (build_dataset(dataset_opt(roots, encoding, **opt)) for encoding in ('png', 'bmp'))
    full_decodes = count_full_decodes(monkeypatch)
    for repeat in range(3):  # random crops, flips and rotations: the same draws must give the same tensors
        for index in range(len(png)):
            random.seed(repeat * 100 + index)
            expected, state = png[index], random.getstate()
            decodes = len(full_decodes)
            random.seed(repeat * 100 + index)
            got = bmp[index]
            assert len(full_decodes) == decodes, 'the BMP sample was decoded whole, not read as windows'
            assert random.getstate() == state  # the same draws, so later samples stay in step too
            for key in keys:
                assert expected[key].dtype == got[key].dtype == torch.float32
                assert expected[key].shape == got[key].shape
                assert torch.equal(expected[key], got[key]), (repeat, index, key)
            assert expected['gt_path'] == got['gt_path']


@pytest.mark.parametrize('opt', [{'dataroot_variants': 'var32'}, {'phase': 'val'}, {'cache_decoded': True},
                                 {'gt_size': 40}], ids=['32-bit variant', 'val', 'cache', 'too large'])
def test_bmp_samples_fall_back_to_the_full_decode(roots, monkeypatch, opt):
    """A BMP that windows cannot read (32-bit, here in one of the roots), the val phase and cache_decoded take the
    full decode, with the same samples as PNG; a crop larger than the image raises the full path's error."""
    from basicsr.data import build_dataset
    variant = opt.pop('dataroot_variants', None)
    png_opt, bmp_opt = dataset_opt(roots, 'png', **opt), dataset_opt(roots, 'bmp', **opt)
    if variant:
        bmp_opt['dataroot_variants'] = [roots[variant]['bmp']]
    png, bmp = build_dataset(png_opt), build_dataset(bmp_opt)
    full_decodes = count_full_decodes(monkeypatch)
    if opt.get('gt_size') == 40:
        with pytest.raises(ValueError, match='smaller than patch size'):
            bmp[0]
        return
    for index in range(len(png)):
        random.seed(index)
        expected = png[index]
        random.seed(index)
        decodes = len(full_decodes)
        got = bmp[index]
        assert len(full_decodes) > decodes
        for key in ('gt', 'lq', 'variants'):
            assert torch.equal(expected[key], got[key]), (index, key)


def test_training_batches_from_bmp_equal_those_from_png(roots):
    """basicsr's seeded training loader (2 workers, shuffling) over either encoding yields identical batches."""
    from basicsr.data import build_dataloader, build_dataset

    def batches(encoding):
        opt = dataset_opt(roots, encoding)
        torch.manual_seed(0)  # the shuffling sampler draws from torch's generator
        loader = build_dataloader(build_dataset(opt), opt, num_gpu=0, dist=False, sampler=None, seed=0)
        return list(loader)

    png, bmp = batches('png'), batches('bmp')
    assert len(png) == len(bmp) == 2
    for expected, got in zip(png, bmp):
        assert expected['gt_path'] == got['gt_path']
        for key in ('gt', 'lq', 'variants'):
            assert torch.equal(expected[key], got[key]), key


@pytest.mark.parametrize('first, second', [('png', 'bmp'), ('bmp', 'png')])
def test_resuming_with_another_encoding_is_refused(tmp_path, first, second):
    imgs = images(4)
    out = str(tmp_path / 'x.lmdb')
    writer = LmdbWriter(out, commit_every=1, encoding=first)
    for key in list(imgs)[:2]:
        writer.put_image(key, imgs[key])
    writer.close()  # no finalize: an interrupted run
    with pytest.raises(ValueError, match=f"cannot resume .*x.lmdb with encoding '{second}': its partial data is "
                       f"'{first}' and a database never mixes encodings \\(resume with --encoding {first}"):
        write_images(out, imgs.items(), encoding=second)
    assert not os.path.exists(os.path.join(out, 'meta_info.txt'))
    assert write_images(out, imgs.items(), encoding=first) == 4  # the refusal left it resumable
    reference = str(tmp_path / 'ref.lmdb')
    write_images(reference, imgs.items(), encoding=first)
    assert lmdb_items(out) == lmdb_items(reference)


def test_shards_and_merge_keep_the_encoding(tmp_path):
    imgs = images(5)
    single = str(tmp_path / 'single.lmdb')
    write_images(single, imgs.items(), encoding='bmp')
    out = str(tmp_path / 'sharded.lmdb')
    for rank in (0, 1):
        write_sharded(out, list(imgs), imgs.get, rank=rank, world_size=2, encoding='bmp')
        assert read_lmdb_format(shard_path(out, rank, 2)) == ('bmp', 0)
    assert merge_shards(out) == 5
    assert lmdb_items(out) == lmdb_items(single)
    assert read_text(f'{out}/meta_info.txt') == read_text(f'{single}/meta_info.txt')
    mixed = str(tmp_path / 'mixed.lmdb')
    for rank, encoding in ((0, 'bmp'), (1, 'png')):
        write_sharded(mixed, list(imgs), imgs.get, rank=rank, world_size=2, encoding=encoding)
    with pytest.raises(ValueError, match=r'cannot merge shards of different encodings.*rank0of2.lmdb \(bmp, level 0\)'
                       r'.*rank1of2.lmdb \(png, level 1\)'):
        merge_shards(mixed)
    assert not os.path.exists(os.path.join(mixed, 'meta_info.txt'))


def gtplus(capsys, *args):
    """Run ``gtplus ARGS`` in process; returns (exit code, stderr)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_make_lmdb_encoding_flag(tmp_path, capsys):
    folder, imgs = make_folder(tmp_path / 'in', num=3)
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'png.lmdb')[0] == 0
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'bmp.lmdb', '--encoding', 'bmp')[0] == 0
    assert read_text(tmp_path / 'bmp.lmdb' / 'meta_info.txt') == ''.join(f'{k}.bmp (12,16,3) 0\n' for k in sorted(imgs))
    assert read_text(tmp_path / 'png.lmdb' / 'meta_info.txt') == ''.join(f'{k}.png (12,16,3) 1\n' for k in sorted(imgs))
    png, bmp = ImageSource(str(tmp_path / 'png.lmdb')), ImageSource(str(tmp_path / 'bmp.lmdb'))
    for key in imgs:
        np.testing.assert_array_equal(bmp.read(key), png.read(key))
    # Paired mode, sharded, merged: both outputs stay BMP.
    gt, _ = make_folder(tmp_path / 'GT', num=3, height=8, width=8)
    lq, _ = make_folder(tmp_path / 'LQ', num=3, height=4, width=4, seed=50)
    for rank in (0, 1):
        assert gtplus(capsys, 'make-lmdb', '--lq', lq, '--gt', gt, '--scale', 2, tmp_path / 'pair', '--encoding', 'bmp',
                      '--rank', rank, '--world-size', 2)[0] == 0
    assert gtplus(capsys, 'make-lmdb', '--lq', lq, '--gt', gt, tmp_path / 'pair', '--merge')[0] == 0
    assert read_text(tmp_path / 'pair_gt.lmdb' / 'meta_info.txt').startswith('000.bmp (8,8,3) 0\n')
    assert read_text(tmp_path / 'pair_lq.lmdb' / 'meta_info.txt').startswith('000.bmp (4,4,3) 0\n')
    with pytest.raises(SystemExit):
        main(['make-lmdb', folder, str(tmp_path / 'x.lmdb'), '--encoding', 'jpg'])
    assert "invalid choice: 'jpg'" in capsys.readouterr().err


def test_make_lmdb_refuses_to_resume_in_another_encoding(tmp_path, capsys):
    folder, imgs = make_folder(tmp_path / 'in', num=3)
    out = tmp_path / 'out.lmdb'
    with LmdbWriter(str(out), commit_every=1) as writer:  # a PNG run killed after one image
        writer.put_image('000', imgs['000'])
    code, err = gtplus(capsys, 'make-lmdb', folder, out, '--encoding', 'bmp')
    assert code == 2 and err.strip().count('\n') == 0 and 'never mixes encodings' in err and 'Traceback' not in err
    assert gtplus(capsys, 'make-lmdb', folder, out, '--encoding', 'bmp', '--overwrite')[0] == 0
    assert read_lmdb_format(str(out)) == ('bmp', 0)
