"""Read images from a folder or a BasicSR-format LMDB, by key, through one small interface.

Every gtplus tool that consumes images (make-lmdb, scoring, GT variants, enhanced GT, refine) reads them through
:class:`ImageSource`, which decodes with :func:`gtplus_data.image_util.decode_image`, so odd files (gray, RGBA,
16-bit, corrupt) are handled the same way everywhere (see that module).
"""
import os
import zlib
from contextlib import contextmanager

from gtplus_data.image_util import bmp_pixel_view, decode_image
from gtplus_data.lmdb_check import check_lmdb_file, lmdb_read_error

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def list_image_files(folder):
    """Map key (file stem) -> file path for the images directly inside ``folder`` (not recursive).

    Args:
        folder (str): a directory.

    Returns:
        dict[str, str]: key -> path, in sorted key order.

    Raises:
        FileNotFoundError: if ``folder`` is not a directory.
        ValueError: if two files share a stem (for example ``a.png`` and ``a.jpg``).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder}')
    files = {}
    for entry in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(entry)
        path = os.path.join(folder, entry)
        if ext.lower() not in IMAGE_EXTENSIONS or not os.path.isfile(path):
            continue
        if stem in files:
            raise ValueError(f'two images share the key {stem!r}: {files[stem]} and {path}')
        files[stem] = path
    return dict(sorted(files.items()))


def is_lmdb_dir(path):
    """Whether ``path`` is a BasicSR-format LMDB folder (``data.mdb``; ``meta_info.txt`` marks it complete)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, 'data.mdb'))


def read_meta_info_keys(lmdb_path):
    """The keys listed in ``lmdb_path/meta_info.txt``, in file order.

    Each line is ``key.png (h,w,c) compress_level``; the key is the name up to its first '.', as basicsr reads it.
    """
    with open(os.path.join(lmdb_path, 'meta_info.txt')) as f:
        return [line.split(' ')[0].split('.')[0] for line in f.read().splitlines() if line.strip()]


# One read-only environment per LMDB path and process tree: py-lmdb refuses to open a path twice in a process, and
# a forked child inherits its parent's environments (read-only and lock-free, they hold no per-process state).
_READ_ENVS = {}


def open_lmdb_readonly(path):
    """The shared read-only, lock-free environment of LMDB ``path``, opened on first use.

    Raises:
        ValueError: naming ``path``, if its data.mdb is truncated (checked before mapping it: see
            :func:`gtplus_data.lmdb_check.check_lmdb_file`) or LMDB cannot open it.
    """
    if path in _READ_ENVS:  # already a resolved path: skip realpath's per-call lstat of every path component
        return _READ_ENVS[path]
    real = os.path.realpath(path)
    if real not in _READ_ENVS:
        import lmdb
        check_lmdb_file(real)
        try:
            _READ_ENVS[real] = lmdb.open(real, readonly=True, lock=False, readahead=False, meminit=False)
        except lmdb.Error as err:
            raise lmdb_read_error(path, err) from None
    return _READ_ENVS[real]


def is_lmdb_open(path):
    """Whether this process holds the shared read-only environment of ``path`` (:func:`open_lmdb_readonly`)."""
    return os.path.realpath(path) in _READ_ENVS


def close_lmdb_readonly(path):
    """Close the shared read-only environment of ``path`` if open (before writing it, or reading it elsewhere)."""
    env = _READ_ENVS.pop(os.path.realpath(path), None)
    if env is not None:
        env.close()


class ImageSource:
    """A folder of images or a BasicSR-format LMDB, addressed by key.

    A folder holds files with the extensions in ``IMAGE_EXTENSIONS``; the key is the file stem. An LMDB folder holds
    ``data.mdb`` and ``meta_info.txt`` (``key.png (h,w,c) compress_level`` per line). The LMDB's ``data.mdb`` is
    checked for truncation at once (an interrupted copy would kill the process with SIGBUS on the first read), then
    opened lazily, read-only and without a lock, and shared by every ImageSource of that path (see
    :func:`open_lmdb_readonly`); sources pickle without it, so they can be handed to dataloader workers.

    Args:
        path (str): the folder or LMDB path.

    Raises:
        FileNotFoundError: for a missing path, or an LMDB without meta_info.txt (incomplete).
        ValueError: for a truncated or damaged LMDB (naming its data.mdb), or two files of one key in a folder.

    Attributes:
        kind (str): 'lmdb' or 'folder'.
        keys (list[str]): sorted keys.
    """

    def __init__(self, path):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f'image source not found: {self.path}')
        if is_lmdb_dir(self.path):
            if not os.path.isfile(os.path.join(self.path, 'meta_info.txt')):
                raise FileNotFoundError(f'LMDB has no meta_info.txt (incomplete or interrupted write?): {self.path}')
            check_lmdb_file(self.path)
            self.kind = 'lmdb'
            self.keys = sorted(read_meta_info_keys(self.path))
            self._real_path = os.path.realpath(self.path)
            self._files = None
        else:
            self.kind = 'folder'
            self._files = list_image_files(self.path)
            self.keys = list(self._files)

    def __len__(self):
        return len(self.keys)

    def __repr__(self):
        return f'ImageSource({self.path!r}, kind={self.kind!r}, {len(self)} images)'

    def describe(self, key):
        """The path (and key) to name in messages."""
        if self.kind == 'folder' and key in self._files:
            return self._files[key]
        return f'{self.path} (key {key!r})'

    def fingerprint(self, key):
        """What the image of ``key`` is, cheaply: a name for messages and a stamp that changes when the image does.

        A folder's stamp is the file's size and modification time (in ns), as make and rsync compare files; an
        LMDB's is the value's length and CRC-32 (an LMDB value has no time of its own).

        Returns:
            tuple[str, str]: (:meth:`describe` of ``key``, stamp).
        """
        if self.kind == 'folder':
            stat = os.stat(self._files[key])
            return self._files[key], f'{stat.st_size} bytes, modified {stat.st_mtime_ns} ns'
        data = self.read_bytes(key)
        return self.describe(key), f'{len(data)} bytes, crc32 {zlib.crc32(data):08x}'

    def read_bytes(self, key):
        """The encoded image bytes stored under ``key``.

        Raises:
            KeyError: if ``key`` is not in the source.
            ValueError: if LMDB reports a damaged database, naming it and the key.
        """
        if self.kind == 'folder':
            if key not in self._files:
                raise KeyError(f'key {key!r} not in {self.path}')
            with open(self._files[key], 'rb') as f:
                return f.read()
        import lmdb
        try:
            with open_lmdb_readonly(self._real_path).begin(write=False) as txn:
                value = txn.get(key.encode('ascii'))
        except lmdb.Error as err:  # a damaged page: one line naming the database, not LMDB's bare message
            raise lmdb_read_error(self.path, err, key) from None
        if value is None:
            raise KeyError(f'key {key!r} not in {self.path}')
        return bytes(value)

    @contextmanager
    def pixel_view(self, key):
        """The stored pixels of ``key`` without decoding or copying them, where the value allows it.

        Use as ``with source.pixel_view(key) as pixels:``; crop windows of ``pixels`` and convert them with
        :func:`gtplus_data.image_util.pixels_to_rgb_float` inside the block (the view points into the LMDB map and
        is valid only there).

        Yields:
            np.ndarray | None: (H, W, 3) read-only uint8 BGR view of an uncompressed 24-bit BMP LMDB value (see
            :func:`gtplus_data.image_util.bmp_pixel_view`); None for folders, missing keys and every other value,
            which :meth:`read` decodes (and reports errors for).
        """
        if self.kind != 'lmdb':
            yield None
            return
        import lmdb
        with open_lmdb_readonly(self._real_path).begin(write=False, buffers=True) as txn:
            try:
                value = txn.get(key.encode('ascii'))
            except lmdb.Error as err:
                raise lmdb_read_error(self.path, err, key) from None
            yield None if value is None else bmp_pixel_view(value)

    def read(self, key):
        """Decode the image under ``key``.

        Returns:
            np.ndarray: (H, W, 3) float32 RGB in [0, 1].

        Raises:
            ImageReadError: if the stored bytes are not a readable image (the message names path and key).
        """
        return decode_image(self.read_bytes(key), self.describe(key))


def input_source(path):
    """The :class:`ImageSource` a tool reads from, refused when it holds no image (an empty folder once became an
    empty LMDB, and an empty refine, with exit 0).

    Raises:
        FileNotFoundError: as :class:`ImageSource`.
        ValueError: naming ``path`` and what was looked for, if it holds no image.
    """
    source = ImageSource(path)
    if not source.keys:
        if source.kind == 'lmdb':
            raise ValueError(f'{path} is an LMDB with no keys in its meta_info.txt')
        raise ValueError(f'{path} holds no images (files ending in {", ".join(IMAGE_EXTENSIONS)} directly inside; '
                         'subfolders are not searched)')
    return source


def describe_key_mismatch(keys_a, keys_b, name_a, name_b, limit=10):
    """Say which keys only one of two sets has, naming up to ``limit`` of each and counting the rest.

    Returns:
        str: e.g. "only in GT_DIR: k1, k2 (+3 more); only in LQ_DIR: k9", or '' when the sets are equal.
    """
    parts = []
    for name, extra in ((name_a, sorted(set(keys_a) - set(keys_b))), (name_b, sorted(set(keys_b) - set(keys_a)))):
        if extra:
            parts.append(f'{len(extra)} key(s) only in {name}: {name_list(extra, limit)}')
    return '; '.join(parts)


def name_list(names, limit=10):
    """``'a, b, c (+7 more)'``: the first ``limit`` names, then how many are left out."""
    more = f' (+{len(names) - limit} more)' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more
