"""gtplus make-lmdb: image folders -> BasicSR LMDBs (single or LQ/GT pairs), validated, resumable, shardable."""
from gtplus_models.commands._shared import add_shard_arguments

HELP = 'Make BasicSR LMDBs from image folders (single, or --lq/--gt pairs); validated, resumable, shardable.'


def add_arguments(parser):
    parser.add_argument('paths', nargs='+', metavar='PATH',
                        help='IN_DIR OUT.lmdb; or OUT_PREFIX with --lq/--gt (writes OUT_PREFIX_lq.lmdb and '
                        'OUT_PREFIX_gt.lmdb); or OUT.lmdb [OUT2.lmdb ...] with --merge')
    parser.add_argument('--lq', help='LQ image folder (paired mode, with --gt)')
    parser.add_argument('--gt', help='GT image folder (paired mode, with --lq)')
    parser.add_argument('--scale', type=int, default=1, help='paired mode: GT size = scale x LQ size (default 1)')
    parser.add_argument('--overwrite', action='store_true', help='replace a complete output')
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0-9',
                        help='PNG compression level (default 1, as BasicSR)')
    add_shard_arguments(parser, 'merge the finished shards of each output (every PATH, or the --lq/--gt pair of '
                        'OUT_PREFIX) into the final LMDB')


def _outputs(args):
    """The LMDB folders to merge: OUT_PREFIX_lq.lmdb and OUT_PREFIX_gt.lmdb in paired mode, else every PATH."""
    from gtplus_data.make_lmdb import paired_lmdb_paths
    if args.lq or args.gt:
        return list(paired_lmdb_paths(args.paths[-1]))
    return list(args.paths)


def _make(args):
    from gtplus_data.lmdb_writer import merge_shards
    from gtplus_data.make_lmdb import folder_to_lmdb, paired_folders_to_lmdb
    if args.merge:
        return [f'{out}: {merge_shards(out, overwrite=args.overwrite)} images' for out in _outputs(args)]
    common = dict(overwrite=args.overwrite, compress_level=args.compress_level, rank=args.rank,
                  world_size=args.world_size)
    if args.lq or args.gt:
        if not (args.lq and args.gt) or len(args.paths) != 1:
            raise ValueError('paired mode needs --lq LQ_DIR --gt GT_DIR and one OUT_PREFIX')
        return list(paired_folders_to_lmdb(args.lq, args.gt, args.paths[0], scale=args.scale, **common))
    if len(args.paths) != 2:
        raise ValueError('expected IN_DIR OUT.lmdb (or --lq/--gt with OUT_PREFIX, or --merge OUT.lmdb)')
    return [folder_to_lmdb(args.paths[0], args.paths[1], **common)]


def run(args):
    import sys

    import cv2
    from basicsr.utils import get_root_logger

    # Our errors name each bad file; OpenCV's own decoder warnings name none and would bury them.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        written = _make(args)
    except (FileNotFoundError, FileExistsError, ValueError) as error:  # ImageReadError is a ValueError
        # A user error: one clear message and exit status 2 (as argparse), no traceback.
        sys.stderr.write(f'gtplus make-lmdb: error: {error}\n')
        return 2
    logger = get_root_logger()
    for line in written:
        logger.info(f'done: {line}')
    return 0
