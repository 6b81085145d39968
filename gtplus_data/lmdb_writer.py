"""The one LMDB writer of gtplus: every tool that produces images (make-lmdb, GT SR variants, enhanced GT,
synthesized pairs) writes through it.

Format (BasicSR's, readable by ``basicsr.utils.FileClient('lmdb', ...)`` + ``imfrombytes``):
    ``OUT.lmdb/data.mdb``: key (ASCII, no spaces) -> 8-bit encoded image bytes (BGR inside, as OpenCV and BasicSR
    expect), every value in the database's one encoding.
    ``OUT.lmdb/meta_info.txt``: one ``key.EXT (h,w,c) compress_level`` line per image, sorted by key, exactly as
    ``basicsr.utils.lmdb_util.make_lmdb_from_imgs`` writes it (basicsr's readers take the name up to its first '.'
    as the key, which is why keys may not contain '.'). EXT records the encoding.

Encodings (``encoding=``, ``gtplus make-lmdb --encoding``); both lossless and decoded by ``cv2.imdecode``, so
basicsr's readers and :func:`gtplus_data.image_util.decode_image` return the same pixels from either:
    * ``png`` (default; ``key.png (h,w,c) level``): zlib-compressed, compress level 0-9. Smallest on disk (the sample
      photos: about 1.6 bytes per pixel at level 1), but decoding costs about 1.5 ms per 256² image, which a
      training loader pays for every sample. Pick it for archives, evaluation sets and data read once.
    * ``bmp`` (``key.bmp (h,w,c) 0``): uncompressed 24-bit BMP, about 3 bytes per pixel (+54 bytes), rows stored
      as they are, so nothing needs decoding. The gtplus training datasets read a ``gt_size`` crop as a window of
      the stored rows, straight from the LMDB map (zero-copy; see
      :meth:`gtplus_data.dataset_util.KeyedRootsDataset.load`): only the crop is copied and converted to float,
      with the same random draws, so the samples are bit-identical to those of a PNG LMDB. Pick it for training
      sets, above all those too large for ``cache_decoded``, when the loader workers share few CPU cores with
      training: the loader's CPU work per sample falls below ``cache_decoded``'s, and with so little left to do,
      ``num_worker_per_gpu: 0`` (read in the training process) brings a 2-core training step to 1.02x the
      in-memory step, against 1.2x with 2 workers (README, "Training step, LMDB vs in-memory"). basicsr's own
      readers decode it whole with ``cv2.imdecode``, as any BMP.
A database never mixes encodings: values of another encoding are refused, and so is resuming a partial database
with another encoding (or PNG compress level) than it was started with.

16-bit inputs are stored as 8 bits: BasicSR's ``imfrombytes(..., float32=True)`` divides by 255, so 16-bit values
would be read wrongly, and 8 bits keep every database uniform. Gray and RGBA inputs arrive as RGB (see
:mod:`gtplus_data.image_util`), so every value has c = 3.

Guarantees:
    * Resumable: keys already in the database are skipped. Puts are committed in small batches, so a run killed
      (even by SIGKILL) keeps every committed key.
    * Resumed only as started: a partial database records, in the same transactions as its values, how it is being
      made: its encoding and compress level, and, where the caller gives a ``fingerprint``, what each value was made
      from (``gtplus make-lmdb``: the input file's size and modification time). Resuming with another encoding or
      compress level is refused, and so is resuming after inputs were deleted or changed: the error names them and
      says to rerun with ``--overwrite`` (redoing only the changed keys would leave a database whose keys came
      from two versions of the inputs' folder). The record is a named sub-database (``gtplus.resume``, a name no
      image key can take), dropped by ``finalize``: a complete database holds only the images.
    * Damaged outputs are refused: resuming into a truncated or corrupt ``data.mdb`` is a one-line ValueError (see
      :mod:`gtplus_data.lmdb_check`), never a SIGBUS; a failed write (a full disk) is an OSError naming the
      database, and what was committed before stays resumable.
    * Atomic: ``meta_info.txt`` is written last (temporary file + ``os.replace``). A database without it is
      incomplete; readers refuse it and a rerun completes it.
    * Safe: an existing complete output is refused unless ``overwrite=True``.
    * Deterministic: the same images give byte-identical values and meta_info, so kill + rerun equals one clean run.

Work split over ranks (shards and their merge) is in :mod:`gtplus_data.lmdb_shards`; per-key data that travels
with the images (quality scores, which synthesizer or epoch made an image) in :mod:`gtplus_data.side_file`.
"""
import os
import os.path as osp
import re
import shutil
import struct

from gtplus_data.atomic_file import atomic_write
from gtplus_data.image_source import close_lmdb_readonly, name_list
from gtplus_data.image_util import encode_image
from gtplus_data.lmdb_check import DATA_FILE, check_lmdb_file

META_INFO = 'meta_info.txt'
RESUME_RECORD = b'gtplus.resume'  # named sub-database of a partial LMDB: how it is being made (see the docstring)
FORMAT_ENTRY = b'.format'  # in RESUME_RECORD: 'ENCODING LEVEL'; the other entries are key -> fingerprint
DEFAULT_MAP_SIZE = 1 << 30  # a sparse file on Linux: only used pages take disk space
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels as decoded by OpenCV
ENCODINGS = ('png', 'bmp')  # also the meta_info extension of each


def is_complete(path):
    """Whether ``path`` is a finished LMDB (its meta_info.txt exists)."""
    return osp.isfile(osp.join(path, META_INFO))


def refuse_complete(path):
    """Raise FileExistsError if ``path`` is a complete LMDB."""
    if is_complete(path):
        raise FileExistsError(f'output already exists and is complete: {path} (pass --overwrite to replace it)')


def check_encoding(encoding):
    """Return ``encoding`` if the writer can store it ('png' or 'bmp'), else raise ValueError."""
    if encoding not in ENCODINGS:
        raise ValueError(f'unknown LMDB encoding {encoding!r}; choose one of {", ".join(ENCODINGS)}')
    return encoding


def value_encoding(data):
    """The encoding of image bytes from their signature: 'png', 'bmp', or None for anything else."""
    head = bytes(data[:8])
    if head == PNG_SIGNATURE:
        return 'png'
    if head[:2] == b'BM':
        return 'bmp'
    return None


def _bmp_shape(data):
    """(h, w, 3) of a 24-bit uncompressed BMP (the only BMP gtplus writes), read from its header."""
    if len(data) < 54:
        raise ValueError('LMDB value is a truncated BMP (shorter than its 54-byte header)')
    width, height, _, bits, compression = struct.unpack('<iiHHI', bytes(data[18:34]))
    if bits != 24 or compression != 0:
        # Paletted or 32-bit BMPs decode to 1, 3 or 4 channels depending on their contents: refuse the guess.
        raise ValueError(f'BMP LMDB values must be 24-bit uncompressed (got {bits}-bit, compression {compression})')
    return abs(height), width, 3  # a negative height marks a top-down BMP


def value_shape(data, encoding='png'):
    """(h, w, c) of encoded image bytes, read from their header without decoding the pixels.

    Args:
        data (bytes | memoryview): a PNG or 24-bit BMP.
        encoding (str): the database's encoding; bytes of any other encoding are refused (a database never mixes
            encodings, as its meta_info records one per line).

    Returns:
        tuple[int, int, int]: height, width, channels as OpenCV decodes them.

    Raises:
        ValueError: if ``data`` is not an image of ``encoding``, naming both.
    """
    actual = value_encoding(data)
    if actual != encoding:
        raise ValueError(f'LMDB values must be {encoding.upper()} bytes in this database, got '
                         f'{actual.upper() + " bytes" if actual else "bytes of no known image format"}')
    if encoding == 'bmp':
        return _bmp_shape(data)
    width, height = struct.unpack('>II', bytes(data[16:24]))
    return height, width, PNG_CHANNELS[data[25]]


def png_shape(data):
    """(h, w, c) read from a PNG header, without decoding the pixels (:func:`value_shape` for PNG)."""
    return value_shape(data, 'png')


def check_key(key):
    """Return ``key`` if it can be a BasicSR LMDB key, else raise ValueError.

    A key is non-empty ASCII without whitespace or '.': basicsr lists LMDB keys by cutting each meta_info line at its
    first '.' (``paths_from_lmdb``), so a dotted key would be misread by basicsr's own datasets.
    """
    if not key or not key.isascii() or re.search(r'[\s.]', key):
        raise ValueError(f'LMDB key {key!r} must be non-empty ASCII without spaces or dots (BasicSR meta_info '
                         'format: "key.png (h,w,c) level")')
    return key


class LmdbWriter:
    """Resumable, atomic writer of one BasicSR-format LMDB. Use as a context manager; ``finalize()`` completes it.

    Args:
        out_path (str): the LMDB folder.
        overwrite (bool): delete an existing output (complete or not) first.
        compress_level (int): PNG compression 0-9, recorded in meta_info (BMP is never compressed: 0 is recorded).
        map_size (int | None): initial LMDB map size in bytes (default 1 GiB); doubled whenever it fills up.
        commit_every (int): puts per transaction, i.e. the most a kill can lose.
        encoding (str): 'png' (compact) or 'bmp' (fast to decode, ~3 bytes per pixel); see the module docstring.
        keys (list[str] | None): every key this run will write, when known: resuming a partial database that holds
            other keys (inputs deleted since it was started) is refused.
        fingerprint (callable | None): key -> (name, stamp), what the value of ``key`` is made from: ``name`` is
            shown in messages (a file path), ``stamp`` (str) is recorded with the value and compared on resume
            (e.g. :meth:`gtplus_data.image_source.ImageSource.fingerprint`: size and modification time).

    Raises:
        ValueError: for an unknown encoding; when resuming a partial database written with another encoding or
            compress level, from inputs that changed since (naming them), or one whose data.mdb is truncated or
            damaged.
    """

    def __init__(self, out_path, overwrite=False, compress_level=1, map_size=None, commit_every=8, encoding='png',
                 keys=None, fingerprint=None):
        import lmdb
        self.out_path = str(out_path)
        self.encoding = check_encoding(encoding)
        self.env, self._pending = None, {}
        close_lmdb_readonly(self.out_path)  # py-lmdb allows one environment per path and process
        self.compress_level = int(compress_level) if encoding == 'png' else 0
        self.commit_every = int(commit_every)
        self.fingerprint = fingerprint
        if overwrite and osp.exists(self.out_path):
            shutil.rmtree(self.out_path)
        refuse_complete(self.out_path)
        if osp.isfile(osp.join(self.out_path, DATA_FILE)):
            check_lmdb_file(self.out_path)  # a truncated file would SIGBUS the first read below
        os.makedirs(self.out_path, exist_ok=True)
        try:
            self.env = lmdb.open(self.out_path, map_size=map_size or DEFAULT_MAP_SIZE, meminit=False, max_dbs=1)
            self.record = self.env.open_db(RESUME_RECORD)
            with self.env.begin() as txn:
                self._done = {bytes(k).decode('ascii') for k in txn.cursor().iternext(values=False)
                              if bytes(k) != RESUME_RECORD}
                self._check_resumed_format(txn)
                if keys is not None:
                    self._check_resumed_inputs(txn, keys)
        except lmdb.Error as err:
            self.close()
            raise ValueError(f'cannot resume {self.out_path}: {str(err).splitlines()[0]} (a damaged partial '
                             'database?); pass --overwrite to start again') from None
        except ValueError:
            self.close()
            raise

    def _check_resumed_format(self, txn):
        """Refuse to resume a partial database of another encoding or compress level (never mix them)."""
        recorded = txn.get(FORMAT_ENTRY, db=self.record)
        if recorded is not None:
            found, level = recorded.decode('ascii').split()
        else:  # nothing committed yet, or a partial database of an older gtplus: its values tell the encoding
            cursor = txn.cursor()
            values = (value for key, value in cursor if bytes(key) != RESUME_RECORD)
            first = next(values, None)
            found, level = (self.encoding if first is None else value_encoding(first)), None
        if found is None:
            raise ValueError(f'cannot resume {self.out_path}: its partial data is not PNG or BMP (pass --overwrite to '
                             'start again)')
        if found != self.encoding:
            raise ValueError(f'cannot resume {self.out_path} with encoding {self.encoding!r}: its partial data is '
                             f'{found!r} and a database never mixes encodings (resume with --encoding {found}, or '
                             'pass --overwrite to start again)')
        if level is not None and int(level) != self.compress_level:
            raise ValueError(f'cannot resume {self.out_path} with --compress-level {self.compress_level}: its partial '
                             f'data was written at level {level} and a database never mixes compress levels (resume '
                             f'with --compress-level {level}, or pass --overwrite to start again)')

    def _check_resumed_inputs(self, txn, keys):
        """Refuse to resume a partial database made from inputs that were deleted or changed since, naming them."""
        wanted = set(keys)
        deleted, changed = [], []
        for key in sorted(self._done):
            recorded = txn.get(key.encode('ascii'), db=self.record)
            name, _, stamp = (recorded or b'').decode('utf-8').partition('\0')
            if key not in wanted:
                deleted.append(name or key)
            elif recorded is not None and self.fingerprint is not None:
                current_name, current_stamp = self.fingerprint(key)
                if current_stamp != stamp:
                    changed.append(current_name)
        found = '; '.join(f'{what}: {name_list(names)}' for what, names in (('deleted', deleted), ('changed', changed))
                          if names)
        if found:
            raise ValueError(f'cannot resume {self.out_path}: its inputs changed since it was started ({found}); rerun '
                             'with --overwrite to start again')

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def has(self, key):
        """Whether ``key`` is already written (committed or pending)."""
        return key in self._done or key in self._pending

    def put_image(self, key, img):
        """Store ``img`` ((H, W, 3) RGB uint8 / uint16 / float [0,1]) in the database's encoding under ``key``;
        skipped if present."""
        if not self.has(check_key(key)):
            self.put_bytes(key, encode_image(img, self.encoding, self.compress_level))

    def put_bytes(self, key, data, shape=None):
        """Store encoded image bytes (of the database's encoding) under ``key``; skipped if present.

        Args:
            key (str): ASCII key without spaces.
            data (bytes): PNG or 24-bit BMP bytes (BGR inside), matching ``self.encoding``.
            shape (tuple | None): (h, w, c), checked against the header when given.

        Raises:
            ValueError: for bytes of another encoding (naming the key) or a shape that differs from the header's.
        """
        if self.has(check_key(key)):
            return
        try:
            actual = value_shape(data, self.encoding)
        except ValueError as error:
            raise ValueError(f'key {key!r}: {error}') from None
        if shape is not None and tuple(shape) != actual:
            raise ValueError(f'key {key!r}: given shape {tuple(shape)} but the {self.encoding.upper()} is {actual}')
        origin = None
        if self.fingerprint is not None:
            name, stamp = self.fingerprint(key)
            origin = f'{name}\0{stamp}'.encode('utf-8')
        self._pending[key] = (bytes(data), origin)
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self):
        """Make pending puts durable (one transaction, with their record), growing the map when it is full.

        Raises:
            OSError: naming the database, if LMDB cannot write (a full disk); earlier commits stay resumable.
        """
        import lmdb
        while self._pending:
            try:
                with self.env.begin(write=True) as txn:
                    txn.put(FORMAT_ENTRY, f'{self.encoding} {self.compress_level}'.encode('ascii'), db=self.record)
                    for key, (data, origin) in self._pending.items():
                        txn.put(key.encode('ascii'), data)
                        if origin is not None:
                            txn.put(key.encode('ascii'), origin, db=self.record)
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()['map_size'] * 2)
                continue
            except lmdb.Error as err:
                raise OSError(f'cannot write LMDB {self.out_path}: {str(err).splitlines()[0]}') from None
            self._done.update(self._pending)
            self._pending = {}

    def finalize(self):
        """Commit, drop the resume record, then write meta_info.txt (sorted keys) last and atomically.

        Returns:
            int: the number of images in the database.
        """
        import lmdb
        self.commit()
        try:
            with self.env.begin(write=True) as txn:
                txn.drop(self.record, delete=True)
            with self.env.begin(buffers=True) as txn:  # memoryviews: only the image headers' pages are touched
                lines = [f'{bytes(key).decode("ascii")}.{self.encoding} ({h},{w},{c}) {self.compress_level}\n'
                         for key, value in txn.cursor() for h, w, c in [value_shape(value, self.encoding)]]
            self.env.sync(True)
        except lmdb.Error as err:
            raise OSError(f'cannot write LMDB {self.out_path}: {str(err).splitlines()[0]}') from None
        atomic_write(osp.join(self.out_path, META_INFO), ''.join(sorted(lines)))
        return len(lines)

    def close(self):
        """Commit what is pending and close the environment (the database stays incomplete until finalize).

        The environment is closed even when the commit fails (a full disk), so the path can be opened again.
        """
        if self.env is not None:
            try:
                self.commit()
            finally:
                self.env.close()
                self.env = None


def _put_all(writer, items, total, desc):
    """Put (key, value) items; value is an (H, W, 3) RGB image or bytes of the writer's encoding."""
    from tqdm import tqdm
    for key, value in tqdm(items, total=total, desc=desc, unit='img', disable=None):
        if isinstance(value, (bytes, bytearray, memoryview)):
            writer.put_bytes(key, value)
        else:
            writer.put_image(key, value)


def write_images(out_path, items, overwrite=False, compress_level=1, map_size=None, total=None, desc='write lmdb',
                 encoding='png'):
    """Write ``(key, value)`` items to ``out_path`` and complete it (keys already written are skipped).

    Args:
        out_path (str): the LMDB folder.
        items (iterable): (key, value) pairs; value is an (H, W, 3) RGB image (uint8 / uint16 / float [0,1]) or
            bytes of ``encoding``.
        overwrite (bool): replace an existing output.
        compress_level (int): PNG compression 0-9.
        map_size (int | None): initial map size.
        total (int | None): number of items, for the progress bar.
        desc (str): progress bar label.
        encoding (str): 'png' or 'bmp' (see the module docstring).

    Returns:
        int: number of images in the database.
    """
    with LmdbWriter(out_path, overwrite, compress_level, map_size, encoding=encoding) as writer:
        _put_all(writer, items, total, desc)
        return writer.finalize()


def write_keys(out_path, keys, load, overwrite=False, compress_level=1, map_size=None, desc='write lmdb',
               encoding='png', fingerprint=None):
    """Write ``load(key)`` for every key not yet in ``out_path``, then complete it (meta_info last).

    Args:
        out_path (str): the LMDB folder.
        keys (list[str]): the keys to write; resuming a partial database that holds others is refused.
        load (callable): key -> (H, W, 3) RGB image or bytes of ``encoding``. Called only for keys not written yet,
            so a rerun after a kill loads only the rest.
        overwrite, compress_level, map_size, desc, encoding: as in :func:`write_images`.
        fingerprint (callable | None): key -> (name, stamp) of what its value is made from; see :class:`LmdbWriter`.

    Returns:
        int: number of images in the database.
    """
    with LmdbWriter(out_path, overwrite, compress_level, map_size, encoding=encoding, keys=keys,
                    fingerprint=fingerprint) as writer:
        todo = [key for key in keys if not writer.has(key)]
        _put_all(writer, ((key, load(key)) for key in todo), len(todo), desc)
        return writer.finalize()


def check_resume(out_path, keys, compress_level=1, encoding='png', fingerprint=None):
    """Raise now what resuming the partial LMDB ``out_path`` would raise (see :class:`LmdbWriter`): for tools that
    validate their inputs in a long pass before writing. Returns at once when there is no partial database.

    Args:
        out_path (str): the LMDB folder.
        keys, fingerprint: what the run will write and how its values are made (see :class:`LmdbWriter`).
        compress_level, encoding: the run's settings.

    Raises:
        ValueError: as :class:`LmdbWriter` (another encoding or compress level, changed inputs, a damaged file).
    """
    if is_complete(out_path) or not osp.isfile(osp.join(out_path, DATA_FILE)):
        return
    LmdbWriter(out_path, compress_level=compress_level, encoding=encoding, keys=keys, fingerprint=fingerprint).close()
