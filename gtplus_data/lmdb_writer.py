"""The one LMDB writer of gtplus: every tool that produces images (make-lmdb, GT SR variants, enhanced GT,
synthesized pairs) writes through it.

Format (BasicSR's, readable by ``basicsr.utils.FileClient('lmdb', ...)`` + ``imfrombytes``):
    ``OUT.lmdb/data.mdb``: key (ASCII, no spaces) -> 8-bit PNG bytes (BGR inside, as OpenCV and BasicSR expect).
    ``OUT.lmdb/meta_info.txt``: one ``key.png (h,w,c) compress_level`` line per image, sorted by key, exactly as
    ``basicsr.utils.lmdb_util.make_lmdb_from_imgs`` writes it (basicsr's readers take the name up to its first '.'
    as the key, which is why keys may not contain '.').

16-bit inputs are stored as 8-bit PNG: BasicSR's ``imfrombytes(..., float32=True)`` divides by 255, so 16-bit
values would be read wrongly, and 8 bits keep every database uniform. Gray and RGBA inputs arrive as RGB (see
:mod:`gtplus_data.image_source`), so every value has c = 3.

Guarantees:
    * Resumable: keys already in the database are skipped. Puts are committed in small batches, so a run killed
      (even by SIGKILL) keeps every committed key.
    * Atomic: ``meta_info.txt`` is written last (temporary file + ``os.replace``). A database without it is
      incomplete; readers refuse it and a rerun completes it.
    * Safe: an existing complete output is refused unless ``overwrite=True``.
    * Deterministic: the same images give byte-identical values and meta_info, so kill + rerun equals one clean run.

Shard layout (``rank``/``world_size`` arguments, else torchrun's ``RANK``/``WORLD_SIZE``):
    rank r of w writes the complete LMDB ``OUT.lmdb/shards/rank{r}of{w}.lmdb`` holding ``sorted(keys)[r::w]``;
    :func:`merge_shards` then writes ``OUT.lmdb`` itself (resumable, meta_info last) and removes ``shards/``.

Side files (per-key data that travels with the images: quality scores, which synthesizer or epoch made an image):
    ``OUT.lmdb/<name>.json`` = ``{"format": "gtplus-side-file-1", "description": str,
    "records": {key: {field: value, ...}, ...}}``, keys sorted, written atomically.
"""
import json
import os
import os.path as osp
import re
import shutil
import struct

import cv2
import numpy as np
from basicsr.utils import get_root_logger

META_INFO = 'meta_info.txt'
SHARDS_DIR = 'shards'
SIDE_FILE_FORMAT = 'gtplus-side-file-1'
DEFAULT_MAP_SIZE = 1 << 30  # a sparse file on Linux: only used pages take disk space
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels as decoded by OpenCV


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file, fsync and a rename (readers never see half a file)."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_complete(path):
    """Whether ``path`` is a finished LMDB (its meta_info.txt exists)."""
    return osp.isfile(osp.join(path, META_INFO))


def refuse_complete(path):
    """Raise FileExistsError if ``path`` is a complete LMDB."""
    if is_complete(path):
        raise FileExistsError(f'output already exists and is complete: {path} (pass --overwrite to replace it)')


def to_uint8(img):
    """HxWx3 RGB uint8, uint16 or float [0,1] -> uint8 (floats rounded once, 16-bit scaled by 255/65535)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.
    return (np.clip(img, 0, 1) * 255.).round().astype(np.uint8)


def encode_png(img, compress_level=1):
    """Encode an RGB image as PNG.

    Args:
        img (np.ndarray): (H, W, 3) RGB, uint8, uint16 or float in [0, 1].
        compress_level (int): PNG compression 0-9.

    Returns:
        bytes: 8-bit PNG, BGR inside.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {img.shape}')
    bgr = np.ascontiguousarray(to_uint8(img)[:, :, ::-1])
    ok, encoded = cv2.imencode('.png', bgr, [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
    if not ok:
        raise RuntimeError('OpenCV failed to encode a PNG')
    return encoded.tobytes()


def png_shape(data):
    """(h, w, c) read from a PNG header, without decoding the pixels."""
    if bytes(data[:8]) != PNG_SIGNATURE:
        raise ValueError('LMDB values must be PNG bytes')
    width, height = struct.unpack('>II', bytes(data[16:24]))
    return height, width, PNG_CHANNELS[data[25]]


def check_key(key):
    """Return ``key`` if it can be a BasicSR LMDB key, else raise ValueError.

    A key is non-empty ASCII without whitespace or '.': basicsr lists LMDB keys by cutting each meta_info line at its
    first '.' (``paths_from_lmdb``), so a dotted key would be misread by basicsr's own datasets.
    """
    if not key or not key.isascii() or re.search(r'[\s.]', key):
        raise ValueError(f'LMDB key {key!r} must be non-empty ASCII without spaces or dots (BasicSR meta_info '
                         'format: "key.png (h,w,c) level")')
    return key


def dist_rank_world(rank=None, world_size=None):
    """(rank, world_size) from the arguments, else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    rank = int(os.environ.get('RANK', 0)) if rank is None else int(rank)
    world_size = int(os.environ.get('WORLD_SIZE', 1)) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} is not in [0, world_size={world_size})')
    return rank, world_size


def shard_keys(keys, rank, world_size):
    """The keys rank ``rank`` of ``world_size`` writes: every world_size-th of the sorted keys."""
    return sorted(keys)[rank::world_size]


def shard_path(out_path, rank, world_size):
    """Where rank ``rank`` of ``world_size`` writes its part of ``out_path``."""
    return osp.join(out_path, SHARDS_DIR, f'rank{rank}of{world_size}.lmdb')


class LmdbWriter:
    """Resumable, atomic writer of one BasicSR-format LMDB. Use as a context manager; ``finalize()`` completes it.

    Args:
        out_path (str): the LMDB folder.
        overwrite (bool): delete an existing output (complete or not) first.
        compress_level (int): PNG compression 0-9, recorded in meta_info.
        map_size (int | None): initial LMDB map size in bytes (default 1 GiB); doubled whenever it fills up.
        commit_every (int): puts per transaction, i.e. the most a kill can lose.
    """

    def __init__(self, out_path, overwrite=False, compress_level=1, map_size=None, commit_every=8):
        import lmdb

        from gtplus_data.image_source import close_lmdb_readonly
        self.out_path = str(out_path)
        close_lmdb_readonly(self.out_path)  # py-lmdb allows one environment per path and process
        self.compress_level = int(compress_level)
        self.commit_every = int(commit_every)
        if overwrite and osp.exists(self.out_path):
            shutil.rmtree(self.out_path)
        refuse_complete(self.out_path)
        os.makedirs(self.out_path, exist_ok=True)
        self.env = lmdb.open(self.out_path, map_size=map_size or DEFAULT_MAP_SIZE, meminit=False)
        with self.env.begin() as txn:
            self._done = {bytes(k).decode('ascii') for k in txn.cursor().iternext(values=False)}
        self._pending = {}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def has(self, key):
        """Whether ``key`` is already written (committed or pending)."""
        return key in self._done or key in self._pending

    def put_image(self, key, img):
        """Store ``img`` ((H, W, 3) RGB uint8 / uint16 / float [0,1]) as PNG under ``key``; skipped if present."""
        if not self.has(check_key(key)):
            self.put_bytes(key, encode_png(img, self.compress_level))

    def put_bytes(self, key, data, shape=None):
        """Store encoded PNG bytes under ``key``; skipped if present.

        Args:
            key (str): ASCII key without spaces.
            data (bytes): PNG bytes (BGR inside).
            shape (tuple | None): (h, w, c), checked against the PNG header when given.
        """
        if self.has(check_key(key)):
            return
        actual = png_shape(data)
        if shape is not None and tuple(shape) != actual:
            raise ValueError(f'key {key!r}: given shape {tuple(shape)} but the PNG is {actual}')
        self._pending[key] = bytes(data)
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self):
        """Make pending puts durable (one transaction), growing the map when it is full."""
        import lmdb
        while self._pending:
            try:
                with self.env.begin(write=True) as txn:
                    for key, data in self._pending.items():
                        txn.put(key.encode('ascii'), data)
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()['map_size'] * 2)
                continue
            self._done.update(self._pending)
            self._pending = {}

    def finalize(self):
        """Commit, then write meta_info.txt (sorted keys) last and atomically.

        Returns:
            int: the number of images in the database.
        """
        self.commit()
        with self.env.begin(buffers=True) as txn:  # memoryviews: only the PNG headers' pages are touched
            lines = [f'{bytes(key).decode("ascii")}.png ({h},{w},{c}) {self.compress_level}\n'
                     for key, value in txn.cursor() for h, w, c in [png_shape(value)]]
        self.env.sync(True)
        atomic_write_text(osp.join(self.out_path, META_INFO), ''.join(sorted(lines)))
        return len(lines)

    def close(self):
        """Commit what is pending and close the environment (the database stays incomplete until finalize)."""
        if self.env is not None:
            self.commit()
            self.env.close()
            self.env = None


def _put_all(writer, items, total, desc):
    """Put (key, value) items; value is an (H, W, 3) RGB image or PNG bytes."""
    from tqdm import tqdm
    for key, value in tqdm(items, total=total, desc=desc, unit='img', disable=None):
        if isinstance(value, (bytes, bytearray, memoryview)):
            writer.put_bytes(key, value)
        else:
            writer.put_image(key, value)


def write_images(out_path, items, overwrite=False, compress_level=1, map_size=None, total=None, desc='write lmdb'):
    """Write ``(key, value)`` items to ``out_path`` and complete it (keys already written are skipped).

    Args:
        out_path (str): the LMDB folder.
        items (iterable): (key, value) pairs; value is an (H, W, 3) RGB image (uint8 / uint16 / float [0,1]) or
            PNG bytes.
        overwrite (bool): replace an existing output.
        compress_level (int): PNG compression 0-9.
        map_size (int | None): initial map size.
        total (int | None): number of items, for the progress bar.
        desc (str): progress bar label.

    Returns:
        int: number of images in the database.
    """
    with LmdbWriter(out_path, overwrite, compress_level, map_size) as writer:
        _put_all(writer, items, total, desc)
        return writer.finalize()


def write_keys(out_path, keys, load, overwrite=False, compress_level=1, map_size=None, desc='write lmdb'):
    """Write ``load(key)`` for every key not yet in ``out_path``, then complete it (meta_info last).

    Args:
        out_path (str): the LMDB folder.
        keys (list[str]): the keys to write.
        load (callable): key -> (H, W, 3) RGB image or PNG bytes. Called only for keys not written yet, so a rerun
            after a kill loads only the rest.
        overwrite, compress_level, map_size, desc: as in :func:`write_images`.

    Returns:
        int: number of images in the database.
    """
    with LmdbWriter(out_path, overwrite, compress_level, map_size) as writer:
        todo = [key for key in keys if not writer.has(key)]
        _put_all(writer, ((key, load(key)) for key in todo), len(todo), desc)
        return writer.finalize()


def write_sharded(out_path, keys, load, rank=None, world_size=None, overwrite=False, compress_level=1,
                  desc='write lmdb'):
    """Write this rank's share of ``keys``: the whole of ``out_path`` when world_size is 1, else its shard.

    Every rank must pass the same ``keys``. With world_size > 1, run :func:`merge_shards` once all ranks finished;
    a rank whose shard is already complete does nothing, so a relaunched job only redoes what is missing.

    Returns:
        str: the LMDB path this rank completed.
    """
    rank, world_size = dist_rank_world(rank, world_size)
    if world_size == 1:
        write_keys(out_path, keys, load, overwrite, compress_level, desc=desc)
        return out_path
    if not overwrite:
        refuse_complete(out_path)
    target = shard_path(out_path, rank, world_size)
    if is_complete(target) and not overwrite:
        # A relaunched distributed job: ranks that finished before stay done, the others resume.
        get_root_logger().info(f'shard already complete, nothing to do: {target}')
        return target
    write_keys(target, shard_keys(keys, rank, world_size), load, overwrite, compress_level,
               desc=f'{desc} [{rank}/{world_size}]')
    return target


def find_shards(out_path):
    """The shard LMDBs under ``out_path/shards``, in rank order.

    Raises:
        FileNotFoundError: if there are none, if ranks are missing, or a shard is unfinished (names them).
    """
    folder = osp.join(out_path, SHARDS_DIR)
    names = sorted(os.listdir(folder)) if osp.isdir(folder) else []
    found = [re.fullmatch(r'rank(\d+)of(\d+)\.lmdb', name) for name in names]
    worlds = {int(m.group(2)) for m in found if m}
    if len(worlds) != 1:
        raise FileNotFoundError(f'no shards (or shards of several world sizes) to merge in {folder}')
    world_size = worlds.pop()
    shards = [shard_path(out_path, r, world_size) for r in range(world_size)]
    missing = [s for s in shards if not is_complete(s)]
    if missing:
        raise FileNotFoundError(f'cannot merge: missing or unfinished shards: {", ".join(missing)}')
    return shards


def merge_shards(out_path, overwrite=False):
    """Build ``out_path`` from its complete shards (sorted keys, meta_info last), then remove ``shards/``.

    Resumable like every write. Merging an already merged output only removes leftover shards.

    Returns:
        int: number of images in the merged database.
    """
    from gtplus_data.image_source import ImageSource, close_lmdb_readonly
    if is_complete(out_path) and not overwrite:
        shutil.rmtree(osp.join(out_path, SHARDS_DIR), ignore_errors=True)
        return len(ImageSource(out_path))
    shards = find_shards(out_path)
    for name in (META_INFO, 'data.mdb', 'lock.mdb'):  # overwrite: drop the old merge, keep the shards
        if overwrite and osp.exists(osp.join(out_path, name)):
            os.remove(osp.join(out_path, name))
    sources = [ImageSource(shard) for shard in shards]
    owner = {key: source for source in sources for key in source.keys}
    count = write_keys(out_path, sorted(owner), lambda key: owner[key].read_bytes(key),
                       compress_level=read_compress_level(shards[0]), desc='merge shards')
    for shard in shards:
        close_lmdb_readonly(shard)
    shutil.rmtree(osp.join(out_path, SHARDS_DIR))
    return count


def read_compress_level(lmdb_path):
    """The compress level recorded in the first meta_info line of a complete LMDB (1 if the database is empty)."""
    with open(osp.join(lmdb_path, META_INFO)) as f:
        first = f.readline().split()
    return int(first[-1]) if len(first) >= 3 else 1


def side_file_path(lmdb_path, name):
    """``lmdb_path/<name>.json``; ``name`` must be a plain file stem."""
    if not re.fullmatch(r'[A-Za-z0-9_.-]+', name) or name == META_INFO.split('.')[0]:
        raise ValueError(f'side file name {name!r} must be a plain file stem other than "meta_info"')
    return osp.join(lmdb_path, f'{name}.json')


def write_side_file(lmdb_path, name, records, description):
    """Write per-key side data next to the images (atomic; replaces an older file of that name).

    Args:
        lmdb_path (str): the LMDB (or image) folder.
        name (str): file stem, e.g. 'quality_scores'.
        records (dict[str, dict]): key -> {field: JSON value}.
        description (str): what the fields mean, kept in the file for the next reader.

    Returns:
        str: the side file's path.
    """
    path = side_file_path(lmdb_path, name)
    payload = {'format': SIDE_FILE_FORMAT, 'description': description,
               'records': {key: records[key] for key in sorted(records)}}
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True) + '\n')
    return path


def read_side_file(lmdb_path, name, with_description=False):
    """Read a side file written by :func:`write_side_file`.

    Returns:
        dict[str, dict]: key -> fields; or (records, description) with ``with_description=True``.

    Raises:
        FileNotFoundError: naming the file, if it does not exist.
    """
    path = side_file_path(lmdb_path, name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'side file not found: {path}')
    with open(path) as f:
        payload = json.load(f)
    if payload.get('format') != SIDE_FILE_FORMAT:
        raise ValueError(f'{path} is not a gtplus side file (format {payload.get("format")!r})')
    return (payload['records'], payload['description']) if with_description else payload['records']
