"""Checks of an existing LMDB before anything maps it, and the one wording of LMDB read errors.

A truncated ``data.mdb`` (an interrupted copy) kills its reader with SIGBUS, which no Python handler can catch: LMDB
maps the file and touches pages past its end. :func:`check_lmdb_file` finds this from the two meta pages (and,
when the file ends before the meta's last page, from the pages the trees reference), all read with plain file
reads, so it is safe on a file cut anywhere (to 0 bytes, inside the first page, between the meta pages, or one page
short). ``lmdb.open(readonly=True)`` + ``env.info()`` is not: it succeeds on a file cut after the second meta
page's header, and the first data read then dies.

LMDB's layout (liblmdb 0.9, as bundled by py-lmdb; 64-bit little-endian builds): the file is a sequence of pages of
``psize`` bytes; pages 0 and 1 are the meta pages, each a 16-byte page header (flags, u16 at byte 10, with P_META)
followed by MDB_meta: magic 0xBEEFC0DE (u32 at 0), data version 1 (u32 at 4), the two MDB_db records of the free
and the main tree (48 bytes each from 24; the free one's md_pad, u32 at 24, holds psize; md_root is the u64 at 40
of each), mm_last_pg (u64 at 120) and mm_txnid (u64 at 128). The environment uses the meta with the larger txnid.
Every page a tree references lies inside a complete file; pages up to last_pg almost always do too, but the last
transaction may leave pages it freed unwritten at the end, which is why a file shorter than
``(last_pg + 1) * psize`` is walked before it is called truncated. (A file longer than that is normal.)
"""
import os
import os.path as osp
import struct

DATA_FILE = 'data.mdb'
PAGE_HEADER = 16  # mp_pgno u64, mp_pad u16, mp_flags u16, mp_lower u16, mp_upper u16
META_SIZE = 136  # MDB_meta up to and including mm_txnid
P_BRANCH, P_LEAF, P_META, P_LEAF2 = 0x01, 0x02, 0x08, 0x20  # page flags
F_BIGDATA, F_SUBDATA = 0x01, 0x02  # node flags: value in overflow pages; value is an MDB_db (a sub-tree)
NODE_HEADER = 8  # mn_lo u16, mn_hi u16, mn_flags u16, mn_ksize u16
DB_SIZE, DB_ROOT = 48, 40  # MDB_db: size, and offset of md_root (u64)
P_INVALID = 2 ** 64 - 1  # the root of an empty tree
MDB_MAGIC = 0xBEEFC0DE
MDB_DATA_VERSION = 1
REBUILD_HINT = 'copy it again, or rebuild it (make-lmdb or the verb that wrote it, with --overwrite)'


def _read_meta(f, offset):
    """(flags, magic, version, psize, free root, main root, last_pg, txnid) of the meta page at ``offset``, or None
    past the file's end."""
    f.seek(offset)
    raw = f.read(PAGE_HEADER + META_SIZE)
    if len(raw) < PAGE_HEADER + META_SIZE:
        return None
    flags, = struct.unpack_from('<H', raw, 10)
    magic, version = struct.unpack_from('<II', raw, PAGE_HEADER)
    psize, = struct.unpack_from('<I', raw, PAGE_HEADER + 24)
    free_root, = struct.unpack_from('<Q', raw, PAGE_HEADER + 24 + DB_ROOT)
    main_root, = struct.unpack_from('<Q', raw, PAGE_HEADER + 24 + DB_SIZE + DB_ROOT)
    last_pg, txnid = struct.unpack_from('<QQ', raw, PAGE_HEADER + 120)
    return flags, magic, version, psize, free_root, main_root, last_pg, txnid


def _valid(meta):
    """Whether a meta page is one LMDB itself would accept."""
    flags, magic, version, psize = meta[:4]
    return flags & P_META and magic == MDB_MAGIC and version == MDB_DATA_VERSION and \
        256 <= psize <= 65536 and psize & (psize - 1) == 0


def _tree_pages_end(f, psize, roots, file_pages):
    """One past the highest page the B-trees rooted at ``roots`` reference (overflow runs included).

    Pages inside the file are read (plain reads, never a map) and their children followed; pages past its end are
    counted but cannot be followed, so the result is then a lower bound, which is all a truncation check needs.

    Raises:
        ValueError: for a referenced page inside the file that is neither a branch nor a leaf page.
    """
    stack, seen, end = [root for root in roots if root != P_INVALID], set(), 0
    while stack:
        pgno = stack.pop()
        if pgno in seen:
            continue
        seen.add(pgno)
        end = max(end, pgno + 1)
        if pgno >= file_pages:
            continue
        f.seek(pgno * psize)
        page = f.read(psize)
        flags, lower = struct.unpack_from('<HH', page, 10)
        if not flags & (P_BRANCH | P_LEAF):
            raise ValueError(f'page {pgno} is neither a branch nor a leaf page (flags {flags:#x})')
        if flags & P_LEAF2:  # fixed-size duplicates: keys only, no references
            continue
        for index in range((lower - PAGE_HEADER) // 2):
            ptr, = struct.unpack_from('<H', page, PAGE_HEADER + 2 * index)
            low, high, node_flags, key_size = struct.unpack_from('<HHHH', page, ptr)
            data = ptr + NODE_HEADER + key_size
            if flags & P_BRANCH:
                stack.append(low | high << 16 | node_flags << 32)
            elif node_flags & F_BIGDATA:
                first, = struct.unpack_from('<Q', page, data)
                end = max(end, first + (PAGE_HEADER - 1 + (low | high << 16)) // psize + 1)
            elif node_flags & F_SUBDATA:  # a named database, or the tree of a key's duplicates
                stack.append(struct.unpack_from('<Q', page, data + DB_ROOT)[0])
    return end


def check_lmdb_file(path):
    """Refuse an LMDB whose ``data.mdb`` is truncated or is no LMDB data file, without mapping it.

    Reads the two meta pages (see the module docstring). A file that ends before the meta's last page is then
    walked (plain reads again): LMDB may leave pages freed by its last transaction unwritten at the end, so only a
    page that a tree references past the end is a truncation. Call it before ``lmdb.open`` of an existing database,
    as readers (:class:`gtplus_data.image_source.ImageSource`), the writer when resuming, and the option checks of
    basicsr's LMDB backend do.

    Args:
        path (str): an LMDB folder (holding ``data.mdb``) or its ``data.mdb`` file.

    Returns:
        int: the bytes the environment needs (the file holds at least that many).

    Raises:
        FileNotFoundError: if there is no ``data.mdb``, naming the path.
        ValueError: naming ``data.mdb``, if it is truncated (its size and the size needed), or if its meta pages or
            tree pages are not LMDB's (another file, or a damaged one).
    """
    path = str(path)
    data_file = osp.join(path, DATA_FILE) if osp.isdir(path) else path
    if not osp.isfile(data_file):
        raise FileNotFoundError(f'LMDB data file not found: {data_file}')
    size = os.path.getsize(data_file)
    with open(data_file, 'rb') as f:
        first = _read_meta(f, 0)
        if first is None:
            raise ValueError(f'{data_file} is truncated: {size} bytes, less than the two meta pages every LMDB '
                             f'starts with (an interrupted copy?); {REBUILD_HINT}')
        if not _valid(first):
            raise ValueError(f'{data_file} is not an LMDB data file (its first page is no LMDB meta page); '
                             f'{REBUILD_HINT}')
        psize = first[3]
        second = _read_meta(f, psize)
        if second is None:  # a new environment writes both meta pages at once: this file was cut
            raise ValueError(f'{data_file} is truncated: {size} bytes, the environment needs at least '
                             f'{max(2, first[6] + 1) * psize} (an interrupted copy?); {REBUILD_HINT}')
        if not _valid(second):
            raise ValueError(f'{data_file} is damaged: its second meta page is no LMDB meta page; {REBUILD_HINT}')
        meta = max(first, second, key=lambda m: m[7])  # the environment reads the meta of the newer transaction
        needed = (meta[6] + 1) * psize
        if size >= needed:
            return needed
        try:
            needed = _tree_pages_end(f, psize, meta[4:6], size // psize) * psize
        except (ValueError, struct.error) as err:
            raise ValueError(f'{data_file} is damaged ({err}); {REBUILD_HINT}') from None
    if size < needed:
        raise ValueError(f'{data_file} is truncated: {size} bytes, the environment needs at least {needed} (an '
                         f'interrupted copy?); {REBUILD_HINT}')
    return needed


def lmdb_read_error(path, err, key=None):
    """The ValueError to raise for an ``lmdb.Error`` met while opening or reading LMDB ``path`` (a damaged file).

    Args:
        path (str): the LMDB folder.
        err (lmdb.Error): what py-lmdb raised, e.g. ``MDB_CORRUPTED: Located page was wrong type``.
        key (str | None): the key being read, if any.

    Returns:
        ValueError: one line naming the path (and key) and LMDB's own reason.
    """
    where = f'{path} (key {key!r})' if key is not None else path
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ValueError(f'cannot read LMDB {where}: {reason} (a damaged or incomplete file?); {REBUILD_HINT}')
