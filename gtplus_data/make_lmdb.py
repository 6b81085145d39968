"""Folders (or LMDBs) of images -> BasicSR LMDBs, single or paired, validated before anything is written.

Every input image of this rank's share is decoded first; any unreadable one (corrupt, truncated, empty, not an
image) or, in paired mode, any unmatched key or inconsistent size is reported by key and path, and nothing is
written. A partial output (a killed run) is resumed only with the settings it was started with and only if no
input it already holds was deleted or changed since (each input file's size and modification time are recorded);
otherwise the error names the files and says to rerun with ``--overwrite``. Values are stored as 8-bit PNG, or
uncompressed BMP with ``encoding='bmp'`` (fast to decode, for training sets; see :mod:`gtplus_data.lmdb_writer`
for the format, the encodings and the guarantees).
"""
import os.path as osp

from gtplus_data.image_source import describe_key_mismatch, input_source
from gtplus_data.image_util import ImageReadError
from gtplus_data.lmdb_shards import dist_rank_world, merge_shards, rank_output, shard_keys, write_sharded
from gtplus_data.lmdb_writer import check_encoding, check_key, check_resume, refuse_complete


def validate_images(source, keys, desc='validate'):
    """Decode every image of ``keys`` once and return its shape.

    Args:
        source (ImageSource): where the images are.
        keys (list[str]): the keys to check.
        desc (str): progress bar label.

    Returns:
        dict[str, tuple]: key -> (h, w, 3).

    Raises:
        ImageReadError: listing every unreadable image (or unusable key) by path, one per line.
        ValueError: at once, for a damaged input LMDB (every key would fail alike).
    """
    from tqdm import tqdm
    shapes, errors = {}, []
    for key in tqdm(keys, desc=desc, unit='img', disable=None):
        try:
            check_key(key)
        except ValueError as error:  # a key that basicsr's meta_info cannot list
            errors.append(f'{error}: {source.describe(key)}')
            continue
        try:
            shapes[key] = source.read(key).shape
        except ImageReadError as error:  # names the path already
            errors.append(str(error))
    if errors:
        raise ImageReadError(f'{len(errors)} bad image(s) in {source.path}, nothing written:\n  ' +
                             '\n  '.join(errors))
    return shapes


def check_pair_sizes(lq_shapes, gt_shapes, scale):
    """Check that GT height and width are ``scale`` times LQ's for every key.

    Raises:
        ValueError: naming up to 10 keys with their sizes, and the count of the rest.
    """
    bad = [f'{key} (LQ {lq_shapes[key][0]}x{lq_shapes[key][1]}, GT {gt_shapes[key][0]}x{gt_shapes[key][1]})'
           for key in sorted(gt_shapes)
           if tuple(gt_shapes[key][:2]) != (lq_shapes[key][0] * scale, lq_shapes[key][1] * scale)]
    if bad:
        more = f' (+{len(bad) - 10} more)' if len(bad) > 10 else ''
        raise ValueError(f'GT size is not {scale} x LQ size for {len(bad)} key(s), nothing written: '
                         f'{", ".join(bad[:10])}{more}')


def check_resumable(source, out_path, rank, world_size, overwrite, compress_level, encoding):
    """Refuse, before the validation pass, to resume this rank's partial output of ``source`` with other settings or
    after inputs were deleted or changed (see :class:`gtplus_data.lmdb_writer.LmdbWriter`)."""
    if not overwrite:
        check_resume(rank_output(out_path, rank, world_size), shard_keys(source.keys, rank, world_size),
                     compress_level, encoding, source.fingerprint)


def _write_source(source, out_path, rank, world_size, overwrite, compress_level, encoding):
    """Write this rank's share of ``source`` (already validated) as its part of ``out_path``, recording each input
    file's size and modification time (a resume after they changed is refused)."""
    return write_sharded(out_path, source.keys, source.read, rank, world_size, overwrite, compress_level,
                         desc=osp.basename(out_path.rstrip('/')), encoding=encoding, fingerprint=source.fingerprint)


def folder_to_lmdb(in_path, out_path, overwrite=False, compress_level=1, rank=None, world_size=None,
                   encoding='png'):
    """Validate, then write an image folder (or LMDB) as a BasicSR LMDB (or this rank's shard of it).

    Args:
        in_path (str): image folder or LMDB.
        out_path (str): the output LMDB folder.
        overwrite (bool): replace a complete output.
        compress_level (int): PNG compression 0-9 (ignored for BMP).
        rank, world_size (int | None): sharding (default: torchrun's RANK / WORLD_SIZE, else one process).
        encoding (str): 'png' (compact) or 'bmp' (uncompressed, ~3 bytes per pixel, fast to decode).

    Returns:
        str: the LMDB this call completed (``out_path`` or its shard).
    """
    rank, world_size = dist_rank_world(rank, world_size)
    check_encoding(encoding)  # before the validation pass, which can take long
    source = input_source(in_path)
    if not overwrite:
        refuse_complete(out_path)
    check_resumable(source, out_path, rank, world_size, overwrite, compress_level, encoding)
    keys = shard_keys(source.keys, rank, world_size)
    validate_images(source, keys)
    return _write_source(source, out_path, rank, world_size, overwrite, compress_level, encoding)


def paired_lmdb_paths(out_prefix):
    """OUT_PREFIX -> (OUT_PREFIX_lq.lmdb, OUT_PREFIX_gt.lmdb); a trailing '.lmdb' on the prefix is dropped."""
    prefix = out_prefix[:-5] if out_prefix.endswith('.lmdb') else out_prefix
    return f'{prefix}_lq.lmdb', f'{prefix}_gt.lmdb'


def paired_folders_to_lmdb(lq_path, gt_path, out_prefix, scale=1, overwrite=False, compress_level=1, rank=None,
                           world_size=None, encoding='png'):
    """Validate LQ/GT pairs (readable, same keys, GT = scale x LQ), then write OUT_PREFIX_{lq,gt}.lmdb.

    Both outputs use ``encoding``; the other arguments are as in :func:`folder_to_lmdb`.

    Returns:
        tuple[str, str]: the LQ and GT LMDBs this call completed (or this rank's shards of them).
    """
    rank, world_size = dist_rank_world(rank, world_size)
    check_encoding(encoding)
    lq_source, gt_source = input_source(lq_path), input_source(gt_path)
    lq_out, gt_out = paired_lmdb_paths(out_prefix)
    if not overwrite:
        refuse_complete(lq_out)
        refuse_complete(gt_out)
    mismatch = describe_key_mismatch(lq_source.keys, gt_source.keys, f'LQ {lq_path}', f'GT {gt_path}')
    if mismatch:  # cheap check before decoding anything
        raise ValueError(f'LQ and GT keys differ, nothing written: {mismatch}')
    for source, out in ((lq_source, lq_out), (gt_source, gt_out)):
        check_resumable(source, out, rank, world_size, overwrite, compress_level, encoding)
    keys = shard_keys(gt_source.keys, rank, world_size)
    lq_shapes = validate_images(lq_source, keys, 'validate LQ')
    gt_shapes = validate_images(gt_source, keys, 'validate GT')
    check_pair_sizes(lq_shapes, gt_shapes, scale)
    return tuple(_write_source(source, out, rank, world_size, overwrite, compress_level, encoding)
                 for source, out in ((lq_source, lq_out), (gt_source, gt_out)))


def make_lmdb(paths, lq=None, gt=None, scale=1, merge=False, overwrite=False, compress_level=1, rank=None,
              world_size=None, encoding='png'):
    """``gtplus make-lmdb``: one folder, an LQ/GT pair, or a merge of finished shards.

    Args:
        paths (list[str]): ``[IN_DIR, OUT.lmdb]``; with ``lq``/``gt`` ``[OUT_PREFIX]``; with ``merge`` the outputs
            to merge (``[OUT_PREFIX]`` in paired mode).
        lq, gt (str | None): the LQ and GT folders of paired mode (both or neither).
        scale (int): paired mode: GT size = scale x LQ size.
        merge (bool): merge the shards of every output instead of writing (the shards' own encoding is kept).
        overwrite, compress_level, rank, world_size, encoding: see :func:`folder_to_lmdb`.

    Returns:
        list[str]: one 'PATH' (or 'PATH: N images' after a merge) per output written.
    """
    paired = bool(lq or gt)
    if merge:
        outputs = list(paired_lmdb_paths(paths[-1])) if paired else list(paths)
        return [f'{out}: {merge_shards(out, overwrite=overwrite)} images' for out in outputs]
    common = dict(overwrite=overwrite, compress_level=compress_level, rank=rank, world_size=world_size,
                  encoding=encoding)
    if paired:
        if not (lq and gt) or len(paths) != 1:
            raise ValueError('paired mode needs --lq LQ_DIR --gt GT_DIR and one OUT_PREFIX')
        return list(paired_folders_to_lmdb(lq, gt, paths[0], scale=scale, **common))
    if len(paths) != 2:
        raise ValueError('expected IN_DIR OUT.lmdb (or --lq/--gt with OUT_PREFIX, or --merge OUT.lmdb)')
    return [folder_to_lmdb(paths[0], paths[1], **common)]
