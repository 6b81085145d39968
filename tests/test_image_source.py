"""ImageSource / decode_image: folders and LMDBs, odd images (gray, RGBA, 16-bit) and bad files."""
import os
import pickle

import cv2
import numpy as np
import pytest
from data_helpers import make_folder, random_rgb, write_bad_files, write_rgb

from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import decode_image, ImageReadError
from gtplus_data.lmdb_writer import write_images


def test_folder_source_keys_sorted_rgb_float(tmp_path):
    folder, images = make_folder(tmp_path / 'imgs', num=3)
    write_rgb(tmp_path / 'imgs' / 'b_extra.jpg', random_rgb(7))
    (tmp_path / 'imgs' / 'notes.txt').write_text('ignored: not an image extension')
    source = ImageSource(folder)
    assert source.kind == 'folder' and source.keys == ['000', '001', '002', 'b_extra'] and len(source) == 4
    img = source.read('001')
    assert img.dtype == np.float32 and img.shape == (12, 16, 3)
    np.testing.assert_array_equal((img * 255).round().astype(np.uint8), images['001'])  # RGB, not BGR
    assert source.read_bytes('000') == open(os.path.join(folder, '000.png'), 'rb').read()


def test_lmdb_source_reads_what_was_written_and_pickles(tmp_path):
    _, images = make_folder(tmp_path / 'imgs', num=3)
    write_images(str(tmp_path / 'x.lmdb'), images.items())
    source = ImageSource(str(tmp_path / 'x.lmdb'))
    assert source.kind == 'lmdb' and source.keys == sorted(images)
    np.testing.assert_array_equal((source.read('002') * 255).round().astype(np.uint8), images['002'])
    clone = pickle.loads(pickle.dumps(source))  # a dataloader worker gets its own, lazily opened environment
    assert clone.read('000').shape == (12, 16, 3)
    with pytest.raises(KeyError, match='nope'):
        source.read_bytes('nope')


def test_grayscale_is_replicated_to_rgb(tmp_path):
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    cv2.imwrite(str(tmp_path / 'g.png'), gray)
    img = ImageSource(str(tmp_path)).read('g')
    assert img.shape == (12, 16, 3)
    for c in range(3):
        np.testing.assert_allclose(img[:, :, c], gray / 255., atol=1e-6)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[..., 3] = [[0, 255], [51, 255]]  # transparent, opaque, 20 %, opaque
    cv2.imwrite(str(tmp_path / 'a.png'), rgba[..., [2, 1, 0, 3]])
    img = ImageSource(str(tmp_path)).read('a')
    np.testing.assert_allclose(img[0, 0], [1, 1, 1], atol=1e-6)  # fully transparent -> white
    np.testing.assert_allclose(img[0, 1], [1, 0, 0], atol=1e-6)  # opaque red stays red
    np.testing.assert_allclose(img[1, 0], [1, 0.8, 0.8], atol=1e-6)  # 20 % red over white


def test_16bit_is_scaled_by_65535(tmp_path):
    rgb16 = np.full((4, 4, 3), 65535, np.uint16)
    rgb16[..., 1] = 32768
    write_rgb(tmp_path / 'deep.png', rgb16)
    img = ImageSource(str(tmp_path)).read('deep')
    assert img.dtype == np.float32
    np.testing.assert_allclose(img[0, 0], [1, 32768 / 65535, 1], atol=1e-6)


@pytest.mark.parametrize('kind', ['corrupt', 'truncated', 'empty', 'nonimage'])
def test_bad_files_raise_image_read_error_naming_path(tmp_path, kind):
    paths = write_bad_files(tmp_path)
    with pytest.raises(ImageReadError, match=kind) as info:
        ImageSource(str(tmp_path)).read(kind)
    assert paths[kind] in str(info.value)


def test_decode_image_names_the_source():
    with pytest.raises(ImageReadError, match='some/where.png'):
        decode_image(b'\x89PNG broken', 'some/where.png')


def test_missing_source_and_incomplete_lmdb_and_duplicate_stems(tmp_path):
    with pytest.raises(FileNotFoundError, match='does_not_exist'):
        ImageSource(str(tmp_path / 'does_not_exist'))
    (tmp_path / 'half.lmdb').mkdir()
    (tmp_path / 'half.lmdb' / 'data.mdb').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match='meta_info.txt'):
        ImageSource(str(tmp_path / 'half.lmdb'))
    write_rgb(tmp_path / 'dup.png', random_rgb(0))
    write_rgb(tmp_path / 'dup.jpg', random_rgb(0))
    with pytest.raises(ValueError, match="share the key 'dup'"):
        ImageSource(str(tmp_path))
