"""gtplus restore INPUT OUT_DIR: a score-conditioned network (IQPIRNet) at a target quality score, or a sweep."""
from gtplus_models.commands._shared import check_device, parse_numbers, report_done

HELP = ('Run a score-conditioned network (IQPIRNet) at a target quality score over a folder or LMDB (tiled); write '
        'PNGs, and with --score-sweep a strip per image.')


def add_arguments(parser):
    from gtplus_models.tools.restore import DEFAULT_SCORE, DEFAULT_TILE_PAD
    parser.add_argument('input', help='image folder or BasicSR LMDB')
    parser.add_argument('out_dir', help='output folder (score_<s>/, and sweep/ with --score-sweep)')
    parser.add_argument('--opt', required=True, help='YAML with the network mapping, or an option file with network_g')
    parser.add_argument('--weights', required=True, help='checkpoint (basicsr .pth: params_ema, else params)')
    scores = parser.add_mutually_exclusive_group()
    scores.add_argument('--score', type=str, default=str(DEFAULT_SCORE),
                        help=f'target quality score in [0,1] (default {DEFAULT_SCORE}: the best)')
    scores.add_argument('--score-sweep', help='comma list of scores in [0,1]; also writes sweep/<key>.png strips')
    parser.add_argument('--tile', type=int, default=0,
                        help='tile size in pixels (0: whole image; a fixed-size network such as IQPIRNet always runs '
                             'in windows of its img_size, and takes 0 or that size)')
    parser.add_argument('--tile-pad', type=int, default=None,
                        help=f'context pixels around each tile (default {DEFAULT_TILE_PAD}, at most a quarter of a '
                             'fixed input size)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")


def run(args):
    check_device(args.device)
    import time

    from gtplus_models.tools.restore import check_scores, restore
    started = time.monotonic()
    flag, text = ('--score-sweep', args.score_sweep) if args.score_sweep is not None else ('--score', args.score)
    scores = parse_numbers(text, flag)
    if flag == '--score' and len(scores) != 1:
        raise ValueError(f'--score takes one number in [0,1], got {text!r} (use --score-sweep for several)')
    check_scores(scores, flag)
    keys = restore(args.input, args.out_dir, args.opt, args.weights, scores, args.tile, args.tile_pad, args.device)
    report_done('restore', f'{len(keys)} images x {len(scores)} scores', args.out_dir, started)
    return 0
