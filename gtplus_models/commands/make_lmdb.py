"""gtplus make-lmdb IN_DIR OUT.lmdb | --lq LQ --gt GT OUT_PREFIX | --merge OUT.lmdb ...: BasicSR LMDBs from folders."""
from gtplus_models.commands._shared import add_shard_arguments, report_outputs

HELP = 'Make BasicSR LMDBs from image folders (single, or --lq/--gt pairs); validated, resumable, shardable.'


def add_arguments(parser):
    parser.add_argument('paths', nargs='+', metavar='PATH',
                        help='IN_DIR OUT.lmdb; or OUT_PREFIX with --lq/--gt (writes OUT_PREFIX_lq.lmdb and '
                        'OUT_PREFIX_gt.lmdb); or OUT.lmdb [OUT2.lmdb ...] with --merge')
    parser.add_argument('--lq', help='LQ image folder (paired mode, with --gt)')
    parser.add_argument('--gt', help='GT image folder (paired mode, with --lq)')
    parser.add_argument('--scale', type=int, default=1, help='paired mode: GT size = scale x LQ size (default 1)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a complete output, or start a partial one again. Without it a rerun resumes a '
                        'partial output (a killed run), but only with the --encoding and --compress-level it was '
                        'started with and only if no input it already holds was deleted or edited since (each '
                        "input's size and modification time are recorded); otherwise it stops, naming them")
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0-9',
                        help='PNG compression level (default 1, as BasicSR; not used by --encoding bmp)')
    parser.add_argument('--encoding', choices=('png', 'bmp'), default='png',
                        help='stored image format, recorded in meta_info.txt (key.png / key.bmp); both lossless and '
                        "read by basicsr's LMDB backend. png (default): compact. bmp: uncompressed, ~3 bytes per "
                        'pixel (about 2x a PNG photo) but nearly free to read (crops are read as windows): for '
                        'training sets too large for cache_decoded; on few cores also set num_worker_per_gpu: 0')
    add_shard_arguments(parser, 'merge the finished shards of each output (every PATH, or the --lq/--gt pair of '
                        'OUT_PREFIX) into the final LMDB')


def run(args):
    import cv2

    from gtplus_data.make_lmdb import make_lmdb

    # Our errors name each bad file; OpenCV's own decoder warnings name none and would bury them.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    report_outputs(make_lmdb(args.paths, args.lq, args.gt, args.scale, args.merge, args.overwrite,
                             args.compress_level, args.rank, args.world_size, encoding=args.encoding), 'done')
    return 0
