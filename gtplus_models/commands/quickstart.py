"""gtplus quickstart OUT_DIR [--pipeline NAME|all]: a whole method on the embedded photos, on this CPU."""
from gtplus_models.commands._shared import add_cond_argument

HELP = ('Run a whole pipeline on the embedded photos on this CPU (enhanced-supervision: about 5-8 minutes; '
        'undertrained: about 3.5; diffusion: about 6): data, training, the method and its control, held-out '
        'evaluation; writes report.json, report.md and figures/.')


def add_arguments(parser):
    from gtplus_models.quickstart import ALL, DEFAULT_PIPELINE, pipelines
    choices = list(pipelines()) + [ALL]
    parser.add_argument('out_dir', help='output folder (resumable: finished stages are skipped on a rerun)')
    parser.add_argument('--pipeline', default=DEFAULT_PIPELINE, choices=choices,
                        help=f'which pipeline (default {DEFAULT_PIPELINE}); all: each into OUT_DIR/NAME/')
    add_cond_argument(parser, 'enhanced-supervision: c of the report and the enhanced GT')
    parser.add_argument('--size', type=int, default=256, help='side of the square photos (default 256, min 128; '
                        'undertrained: a multiple of 8)')
    parser.add_argument('--photos', help='a folder of your own photographs to run on instead of the embedded ones '
                        '(each at least --size pixels on its short side)')
    parser.add_argument('--holdout', help='comma list of photo names (file stems) held out for the report (default: '
                        'chelsea,rocket for the embedded photos, every fourth photo by name for --photos)')
    parser.add_argument('--iters', type=int, help='iterations of every training stage (a quick preview; default: '
                        'the values in the pipeline\'s templates, gtplus_models/quickstart/templates/)')


def run(args):
    import os.path as osp

    from basicsr.utils import get_root_logger

    from gtplus_models.quickstart import ALL, run_quickstart
    holdout = [n.strip() for n in args.holdout.split(',') if n.strip()] if args.holdout else None
    reports = run_quickstart(args.out_dir, args.pipeline, size=args.size, iters=args.iters, cond=args.cond,
                             photos=args.photos, holdout=holdout)
    logger = get_root_logger()
    for name, report in reports.items():
        out = osp.join(args.out_dir, name) if args.pipeline == ALL else args.out_dir
        logger.info(f'{name}: {report["summary"]}')
        for line in report['verdicts']:
            logger.info(line)
        logger.info(f'report: {out}/report.json, {out}/report.md; figures: {out}/figures/')
    return 0
