"""Tiny image files and LMDBs for the gtplus_data tests (shared by test_image_source, test_lmdb_writer,
test_make_lmdb_cli, test_datasets, test_lmdb_faults, test_write_failures), damaged LMDBs, and the CLI in process."""
import os

import cv2
import numpy as np


def random_rgb(seed, height=12, width=16):
    """(H, W, 3) uint8 RGB noise, different per seed."""
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)


def write_rgb(path, rgb):
    """Write an RGB uint8/uint16 array (OpenCV wants BGR)."""
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return str(path)


def make_folder(folder, num=5, height=12, width=16, seed=0, ext='.png'):
    """``num`` random RGB images named 000..num-1; returns (folder, {key: rgb uint8})."""
    os.makedirs(folder, exist_ok=True)
    images = {f'{i:03d}': random_rgb(seed + i, height, width) for i in range(num)}
    for key, rgb in images.items():
        write_rgb(os.path.join(folder, key + ext), rgb)
    return str(folder), images


def write_bad_files(folder):
    """One corrupt, one truncated, one empty and one non-image file; returns their paths by kind."""
    os.makedirs(folder, exist_ok=True)
    good = cv2.imencode('.png', random_rgb(99))[1].tobytes()
    contents = {'corrupt': good[:40] + bytes(200) + good[240:], 'truncated': good[:len(good) // 2], 'empty': b'',
                'nonimage': b'this is a text file, not a picture\n'}
    paths = {}
    for kind, data in contents.items():
        paths[kind] = os.path.join(folder, f'{kind}.png')
        with open(paths[kind], 'wb') as f:
            f.write(data)
    return paths


def lmdb_items(path):
    """{key: value bytes} of an LMDB, read raw (for byte-identity checks)."""
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = {bytes(k).decode(): bytes(v) for k, v in txn.cursor()}
    env.close()
    return items


def partial_keys(path):
    """The image keys of a partial LMDB (no meta_info yet), without the writer's resume record."""
    return sorted(key for key in lmdb_items(path) if '.' not in key)


def read_text(path):
    with open(path) as f:
        return f.read()


class RunsCode:
    """Unpickling this runs a shell command (what weights_only=True exists to refuse)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


LMDB_PAGE = 4096  # py-lmdb's page size on Linux x86-64


def noise_lmdb(path, num=6, size=40):
    """A complete LMDB of ``num`` random ``size``² images: ~5 KB values in overflow pages, as real images are."""
    from gtplus_data.lmdb_writer import write_images
    write_images(str(path), [(f'k{i}', random_rgb(i, size, size)) for i in range(num)])
    return str(path)


def truncate_lmdb(path, size):
    """Cut ``path/data.mdb`` to ``size`` bytes (an int, or a function of the full size), as an interrupted copy
    does; returns the data.mdb path."""
    data_file = os.path.join(str(path), 'data.mdb')
    size = size(os.path.getsize(data_file)) if callable(size) else size
    with open(data_file, 'r+b') as f:
        f.truncate(size)
    return data_file


def corrupt_lmdb_root(path):
    """Clear the page flags of the main tree's root page: reads then fail with MDB_CORRUPTED (an lmdb.Error)."""
    import struct
    with open(os.path.join(str(path), 'data.mdb'), 'r+b') as f:
        metas = []
        for meta in (0, LMDB_PAGE):  # MDB_meta after the 16-byte page header: main root at 112, txnid at 128
            f.seek(meta + 16)
            raw = f.read(136)
            metas.append(struct.unpack_from('<Q', raw, 128) + struct.unpack_from('<Q', raw, 112))
        root = max(metas)[1]
        f.seek(root * LMDB_PAGE + 10)
        f.write(b'\0\0')
    return str(path)


def gtplus(capsys, *args):
    """``gtplus ARGS`` in process: (exit code, the CLI's own stderr lines; tqdm's progress bars share stderr)."""
    from gtplus_models.cli import main
    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith('gtplus ')]
