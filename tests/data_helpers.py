"""Tiny image files for the gtplus_data tests (shared by test_image_source, test_lmdb_writer, test_make_lmdb_cli,
test_datasets, test_write_failures), and the CLI in process."""
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


def read_text(path):
    with open(path) as f:
        return f.read()


def gtplus(capsys, *args):
    """``gtplus ARGS`` in process: (exit code, the CLI's own stderr lines; tqdm's progress bars share stderr)."""
    from gtplus_models.cli import main
    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith('gtplus ')]
