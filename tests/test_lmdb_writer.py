"""LmdbWriter and friends: BasicSR format, resumable, atomic, deterministic, auto-growing, sharded, side files."""
import os

import numpy as np
import pytest
from data_helpers import lmdb_items, make_folder, random_rgb, read_text

from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import encode_png
from gtplus_data.lmdb_shards import merge_shards, shard_path, write_sharded
from gtplus_data.lmdb_writer import LmdbWriter, write_images, write_keys
from gtplus_data.side_file import read_side_file, write_side_file


def images(num=6, seed=0):
    return {f'im{i:02d}': random_rgb(seed + i, 8 + i, 10) for i in range(num)}


def test_basicsr_file_client_reads_the_database(tmp_path):
    from basicsr.utils import FileClient, imfrombytes
    imgs = images()
    out = str(tmp_path / 'x.lmdb')
    assert write_images(out, imgs.items(), total=len(imgs)) == len(imgs)
    lines = read_text(os.path.join(out, 'meta_info.txt')).splitlines()
    assert lines == [f'{k}.png ({v.shape[0]},{v.shape[1]},3) 1' for k, v in sorted(imgs.items())]
    client = FileClient('lmdb', db_paths=[out], client_keys=['gt'])
    for key, rgb in imgs.items():
        bgr = imfrombytes(client.get(key, 'gt'), float32=False)
        np.testing.assert_array_equal(bgr[:, :, ::-1], rgb)
    client.client._client['gt'].close()  # free the path for later opens in this process


def test_interrupted_write_has_no_meta_info_and_resumes(tmp_path):
    imgs = images(10)
    out = str(tmp_path / 'x.lmdb')
    writer = LmdbWriter(out, commit_every=2)
    for key in list(imgs)[:5]:
        writer.put_image(key, imgs[key])
    writer.close()  # no finalize: as if the process died after its last commit
    assert not os.path.exists(os.path.join(out, 'meta_info.txt'))
    loaded = []
    write_keys(out, list(imgs), lambda key: loaded.append(key) or imgs[key])
    assert loaded == list(imgs)[5:]  # committed keys are not loaded again
    reference = str(tmp_path / 'ref.lmdb')
    write_images(reference, imgs.items())
    assert lmdb_items(out) == lmdb_items(reference)
    assert read_text(f'{out}/meta_info.txt') == read_text(f'{reference}/meta_info.txt')


def test_complete_output_is_refused_unless_overwrite(tmp_path):
    out = str(tmp_path / 'x.lmdb')
    write_images(out, images(2).items())
    with pytest.raises(FileExistsError, match='already exists and is complete.*--overwrite'):
        write_images(out, images(3).items())
    assert write_images(out, images(3, seed=5).items(), overwrite=True) == 3
    assert ImageSource(out).keys == ['im00', 'im01', 'im02']


def test_map_grows_and_values_are_deterministic(tmp_path):
    imgs = {f'k{i}': random_rgb(i, 64, 64) for i in range(8)}  # ~12 KiB of noise each, 8 x the initial map
    for name in ('a.lmdb', 'b.lmdb'):
        write_images(str(tmp_path / name), imgs.items(), map_size=32 * 1024)
    assert lmdb_items(tmp_path / 'a.lmdb') == lmdb_items(tmp_path / 'b.lmdb')
    assert len(lmdb_items(tmp_path / 'a.lmdb')) == 8


def test_float_16bit_and_bytes_inputs_store_8bit_png(tmp_path):
    rgb = random_rgb(3)
    out = str(tmp_path / 'x.lmdb')
    with LmdbWriter(out) as writer:
        writer.put_image('u8', rgb)
        writer.put_image('f32', rgb.astype(np.float32) / 255.)
        writer.put_image('u16', rgb.astype(np.uint16) * 257)
        writer.put_bytes('raw', encode_png(rgb), shape=(12, 16, 3))
        with pytest.raises(ValueError, match='given shape'):
            writer.put_bytes('wrong', encode_png(rgb), shape=(16, 12, 3))
        with pytest.raises(ValueError, match='PNG'):
            writer.put_bytes('jpeg', b'\xff\xd8\xff not png')
        with pytest.raises(ValueError, match='without spaces or dots'):
            writer.put_image('has space', rgb)
        writer.finalize()
    values = lmdb_items(out)
    assert len(set(values.values())) == 1  # all four are the same 8-bit PNG
    assert values['u16'][24] == 8  # PNG bit depth byte


def test_shards_merge_to_the_single_run(tmp_path):
    imgs = images(7)
    single = str(tmp_path / 'single.lmdb')
    write_images(single, imgs.items())
    out = str(tmp_path / 'sharded.lmdb')
    write_sharded(out, list(imgs), imgs.get, rank=0, world_size=3)
    with pytest.raises(FileNotFoundError, match='rank1of3.lmdb'):
        merge_shards(out)
    for rank in (1, 2):
        assert write_sharded(out, list(imgs), imgs.get, rank=rank, world_size=3) == shard_path(out, rank, 3)
    assert sorted(lmdb_items(shard_path(out, 1, 3))) == ['im01', 'im04']
    assert merge_shards(out) == 7
    assert not os.path.exists(os.path.join(out, 'shards'))
    assert lmdb_items(out) == lmdb_items(single)
    assert read_text(f'{out}/meta_info.txt') == read_text(f'{single}/meta_info.txt')
    assert merge_shards(out) == 7  # merging again is a no-op
    with pytest.raises(FileExistsError, match='complete'):
        write_sharded(out, list(imgs), imgs.get, rank=0, world_size=3)


def test_rank_from_torchrun_environment(tmp_path, monkeypatch):
    imgs = images(4)
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert write_sharded(str(tmp_path / 'x.lmdb'), list(imgs), imgs.get) == shard_path(str(tmp_path / 'x.lmdb'), 1, 2)
    monkeypatch.setenv('RANK', '2')
    with pytest.raises(ValueError, match='rank 2'):
        write_sharded(str(tmp_path / 'x.lmdb'), list(imgs), imgs.get)


def test_side_file_roundtrip_and_errors(tmp_path):
    out = str(tmp_path / 'x.lmdb')
    folder, _ = make_folder(tmp_path / 'imgs', num=2)
    source = ImageSource(folder)
    write_images(out, ((key, source.read(key)) for key in source.keys))
    records = {'001': {'score': 0.5, 'synth': 'vqvae2@epoch3'}, '000': {'score': 0.25}}
    path = write_side_file(out, 'quality_scores', records, 'score: MUSIQ/100 in [0,1]; synth: who made it')
    assert path == os.path.join(out, 'quality_scores.json')
    assert read_side_file(out, 'quality_scores') == records
    assert read_side_file(out, 'quality_scores', with_description=True)[1].startswith('score: MUSIQ')
    assert ImageSource(out).keys == ['000', '001']  # the side file does not disturb the database
    with pytest.raises(FileNotFoundError, match='other.json'):
        read_side_file(out, 'other')
    with pytest.raises(ValueError, match='plain file stem'):
        write_side_file(out, '../escape', records, '')
