"""Splitting an LMDB write over ranks, and joining the parts: every gtplus tool that writes data shards this way.

Shard layout (``rank``/``world_size`` arguments, else torchrun's ``RANK``/``WORLD_SIZE``):
    rank r of w writes the complete LMDB ``OUT.lmdb/shards/rank{r}of{w}.lmdb`` holding ``sorted(keys)[r::w]``;
    :func:`merge_shards` then writes ``OUT.lmdb`` itself (resumable, meta_info last) and removes ``shards/``.
Each shard is an ordinary LMDB of :mod:`gtplus_data.lmdb_writer`, with its guarantees (resumable, atomic); the
merge keeps the shards' encoding and compress level (recorded in their meta_info) and refuses shards that disagree.
"""
import os
import os.path as osp
import re
import shutil

from basicsr.utils import get_root_logger

from gtplus_data.image_source import ImageSource, close_lmdb_readonly
from gtplus_data.lmdb_writer import ENCODINGS, META_INFO, is_complete, refuse_complete, write_keys

SHARDS_DIR = 'shards'


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


def rank_output(out_path, rank, world_size):
    """The LMDB rank ``rank`` of ``world_size`` writes: ``out_path`` itself for one rank, else its shard."""
    return out_path if world_size == 1 else shard_path(out_path, rank, world_size)


def write_sharded(out_path, keys, load, rank=None, world_size=None, overwrite=False, compress_level=1,
                  desc='write lmdb', encoding='png', fingerprint=None):
    """Write this rank's share of ``keys``: the whole of ``out_path`` when world_size is 1, else its shard.

    Every rank must pass the same ``keys`` (and ``encoding``). With world_size > 1, run :func:`merge_shards` once
    all ranks finished; a rank whose shard is already complete does nothing, so a relaunched job only redoes what is
    missing.

    Args:
        encoding (str): 'png' or 'bmp' (see :mod:`gtplus_data.lmdb_writer`).
        fingerprint (callable | None): key -> (name, stamp) of what its value is made from, recorded so that a
            resume after the inputs changed is refused (see :class:`gtplus_data.lmdb_writer.LmdbWriter`).
        The other arguments are as in :func:`gtplus_data.lmdb_writer.write_keys`.

    Returns:
        str: the LMDB path this rank completed.
    """
    rank, world_size = dist_rank_world(rank, world_size)
    target = rank_output(out_path, rank, world_size)
    if world_size == 1:
        write_keys(out_path, keys, load, overwrite, compress_level, desc=desc, encoding=encoding,
                   fingerprint=fingerprint)
        return out_path
    if not overwrite:
        refuse_complete(out_path)
    if is_complete(target) and not overwrite:
        # A relaunched distributed job: ranks that finished before stay done, the others resume.
        get_root_logger().info(f'shard already complete, nothing to do: {target}')
        return target
    write_keys(target, shard_keys(keys, rank, world_size), load, overwrite, compress_level,
               desc=f'{desc} [{rank}/{world_size}]', encoding=encoding, fingerprint=fingerprint)
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
    if is_complete(out_path) and not overwrite:
        shutil.rmtree(osp.join(out_path, SHARDS_DIR), ignore_errors=True)
        return len(ImageSource(out_path))
    shards = find_shards(out_path)
    for name in (META_INFO, 'data.mdb', 'lock.mdb'):  # overwrite: drop the old merge, keep the shards
        if overwrite and osp.exists(osp.join(out_path, name)):
            os.remove(osp.join(out_path, name))
    formats = {shard: read_lmdb_format(shard) for shard in shards}
    if len(set(formats.values())) > 1:
        raise ValueError('cannot merge shards of different encodings or compress levels: ' +
                         ', '.join(f'{shard} ({encoding}, level {level})'
                                   for shard, (encoding, level) in formats.items()))
    encoding, compress_level = formats[shards[0]]
    sources = [ImageSource(shard) for shard in shards]
    owner = {key: source for source in sources for key in source.keys}
    # The shards' bytes are copied as they are: the merge keeps their encoding and never re-encodes.
    count = write_keys(out_path, sorted(owner), lambda key: owner[key].read_bytes(key),
                       compress_level=compress_level, desc='merge shards', encoding=encoding)
    for shard in shards:
        close_lmdb_readonly(shard)
    shutil.rmtree(osp.join(out_path, SHARDS_DIR))
    return count


def read_lmdb_format(lmdb_path):
    """(encoding, compress level) recorded in the first meta_info line of a complete LMDB.

    The line is ``key.EXT (h,w,c) level`` and EXT names the encoding. An empty database records neither: ('png', 1),
    the writer's defaults.

    Raises:
        ValueError: if EXT is not an encoding the writer knows.
    """
    with open(osp.join(lmdb_path, META_INFO)) as f:
        first = f.readline().split()
    if len(first) < 3:
        return 'png', 1
    encoding = first[0].rsplit('.', 1)[-1].lower() if '.' in first[0] else ''
    if encoding not in ENCODINGS:
        raise ValueError(f'{lmdb_path}: meta_info names an unknown encoding {encoding!r} in {" ".join(first)!r} '
                         f'(expected key.png or key.bmp)')
    return encoding, int(first[-1])


def read_compress_level(lmdb_path):
    """The compress level recorded in the first meta_info line of a complete LMDB (1 if the database is empty)."""
    return read_lmdb_format(lmdb_path)[1]
