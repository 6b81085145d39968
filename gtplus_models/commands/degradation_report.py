"""gtplus degradation-report PAIRS_PREFIX [PAIRS_PREFIX ...] --out OUT_DIR: colour shift and diversity of pair sets."""
from gtplus_models.commands._shared import report_done, report_outputs

HELP = ('Compare (LQ, GT) pair sets: colour shift (CIEDE2000 between bicubic HR and LQ) and diversity of the '
        'degradations; OUT_DIR/report.json, report.md, samples.png, delta_e_hist.png, one column per set.')


def add_arguments(parser):
    parser.add_argument('prefixes', nargs='+', metavar='PAIRS_PREFIX',
                        help='a pair set: PAIRS_PREFIX_lq.lmdb and PAIRS_PREFIX_gt.lmdb (as synthesize and make-lmdb '
                        '--lq/--gt write them)')
    parser.add_argument('--out', required=True, help='folder for the report files (created)')
    parser.add_argument('--samples', type=int, default=4, help='keys per set in samples.png (default 4; 0: none)')
    parser.add_argument('--clusters', type=int,
                        help='k of the k-means clustering behind the diversity measure (default 8)')


def run(args):
    import time

    from gtplus_models.tools.degradation_report import degradation_report
    started = time.monotonic()
    written = degradation_report(args.prefixes, args.out, args.samples, args.clusters)
    report_outputs(written)
    report_done('degradation-report', f'{len(args.prefixes)} pair set(s)', args.out, started)
    return 0
