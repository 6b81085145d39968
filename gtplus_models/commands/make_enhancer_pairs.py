"""gtplus make-enhancer-pairs GT OUT_PREFIX: (LQ, GT) training pairs for an enhancer from a user's own GT set."""
from gtplus_models.commands._shared import (add_shard_arguments, image_count, parse_numbers, report_done,
                                            report_outputs)

HELP = ('Make same-size (LQ, GT) enhancer training pairs from a GT LMDB/folder (LQ: blur, bicubic down by s, noise, '
        'JPEG, bicubic up): OUT_PREFIX_lq.lmdb, OUT_PREFIX_gt.lmdb, OUT_PREFIX_preview.png.')


def add_arguments(parser):
    parser.add_argument('gt', help='GT LMDB or image folder')
    parser.add_argument('out_prefix', help='writes OUT_PREFIX_lq.lmdb and OUT_PREFIX_gt.lmdb (keys <key>_x<s>)')
    parser.add_argument('--scales', default='2,3,4', help='comma list of down-up factors (default %(default)s; 1: '
                        'no resolution loss, for an enhancer run with super-resolve-gt --at-gt-size)')
    parser.add_argument('--blur', help='Gaussian blur sigma range LOW,HIGH in GT pixels, before the downsampling '
                        '(one value: fixed; default: none)')
    parser.add_argument('--noise', help='Gaussian noise sigma range LOW,HIGH on the 0-255 scale, at the low '
                        'resolution (default: none)')
    parser.add_argument('--jpeg', help='JPEG quality range LOW,HIGH in [1,100], at the low resolution (default: none)')
    parser.add_argument('--seed', type=int, default=0,
                        help='base seed; each pair draws from its own key seed, so reruns and shards agree (default 0)')
    parser.add_argument('--overwrite', action='store_true', help='replace complete outputs')
    parser.add_argument('--preview', type=int, default=4, help='pairs in OUT_PREFIX_preview.png (0: none)')
    add_shard_arguments(parser, 'merge the shards written by all ranks (and write the preview), then stop')


def run(args):
    import time

    from gtplus_models.tools.enhancer_pairs import write_enhancer_pairs
    started = time.monotonic()
    scales = parse_numbers(args.scales, '--scales', int)
    written = write_enhancer_pairs(args.gt, args.out_prefix, scales, parse_numbers(args.blur, '--blur'),
                                   parse_numbers(args.noise, '--noise'), parse_numbers(args.jpeg, '--jpeg'), args.seed,
                                   args.overwrite, args.rank, args.world_size, args.merge, args.preview)
    report_outputs(written)
    report_done('make-enhancer-pairs', f'{image_count(written[0])} pairs ({len(scales)} scales)', args.out_prefix,
                started)
    return 0
