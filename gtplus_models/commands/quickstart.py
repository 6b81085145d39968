"""gtplus quickstart OUT_DIR: the main job, the whole enhanced-supervision pipeline on the embedded photos."""
HELP = ('Run the whole enhanced-supervision pipeline on the embedded photos on this CPU (about 10 minutes): '
        'restorer, enhancer, SR variants, CFMG, ORNet, refine; writes report.json and figures/.')


def add_arguments(parser):
    parser.add_argument('out_dir', help='output folder (resumable: finished stages are skipped on a rerun)')
    parser.add_argument('--cond', type=float, default=0.3, help='c used for the report (default 0.3)')
    parser.add_argument('--size', type=int, default=256, help='side of the square photos (default 256, min 128)')
    parser.add_argument('--iters', type=int, help='iterations of every training stage (a quick preview; default: '
                        'the values in options/quickstart/*.yml)')


def run(args):
    from basicsr.utils import get_root_logger

    from gtplus_models.quickstart import run_quickstart
    report = run_quickstart(args.out_dir, args.cond, args.size, args.iters)
    logger = get_root_logger()
    logger.info(report['summary'])
    for line in report['verdicts']:
        logger.info(line)
    logger.info(f'report: {args.out_dir}/report.json, {args.out_dir}/report.md; figures: {args.out_dir}/figures/')
    return 0
