"""gtplus quickstart OUT_DIR: the main job, the whole enhanced-supervision pipeline on the embedded photos."""
HELP = ('Run the whole enhanced-supervision pipeline on the embedded photos on this CPU (about 10 minutes): '
        'restorer, enhancer, SR variants, CFMG, ORNet, refine; writes report.json and figures/.')


def add_arguments(parser):
    parser.add_argument('out_dir', help='output folder (resumable: finished stages are skipped on a rerun)')
    parser.add_argument('--cond', type=float, default=0.3, help='c used for the report (default 0.3)')


def run(args):
    import logging

    from basicsr.utils import get_root_logger

    from gtplus_models.quickstart import run_quickstart
    get_root_logger(log_level=logging.INFO)
    report = run_quickstart(args.out_dir, args.cond)
    logger = get_root_logger()
    logger.info(report['summary'])
    for line in report['verdicts']:
        logger.info(line)
    logger.info(f'report: {args.out_dir}/report.json, {args.out_dir}/report.md; figures: {args.out_dir}/figures/')
    return 0
