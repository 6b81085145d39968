"""gtplus score DATA --metrics niqe,piqe [--ensemble]: per-image NR-IQA scores as a side file + histogram."""
from gtplus_models.commands._shared import check_device, parse_name_paths, report_outputs

HELP = 'Score every image of an LMDB or image folder with NR-IQA metrics (resumable); writes quality_scores.json.'


def add_arguments(parser):
    parser.add_argument('data', help='image folder or BasicSR LMDB folder')
    parser.add_argument('--metrics', default='niqe,piqe',
                        help='comma-separated pyiqa metric names (default: %(default)s)')
    parser.add_argument('--ensemble', action='store_true',
                        help="add IQPIR's ensemble score s in [0,1] (per-metric min-max over the data, averaged)")
    parser.add_argument('--out', help='side file (default: DATA/quality_scores.json)')
    parser.add_argument('--plot', help='histogram PNG (default: beside the side file; beside DATA for a folder)')
    parser.add_argument('--weights', nargs='+', action='extend', default=[], metavar='NAME=PATH',
                        help='local weight file of a metric, e.g. musiq=/weights/musiq_koniq_ckpt-e95806b9.pth')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default: %(default)s)')
    parser.add_argument('--flush-every', type=int, default=8, help='images between partial-result flushes')


def run(args):
    import os.path as osp

    from gtplus_models.tools.scoring import score_dataset
    if args.flush_every < 1:
        raise ValueError(f'--flush-every must be an integer >= 1, got {args.flush_every}')
    for flag, path in (('--out', args.out), ('--plot', args.plot)):
        if path and osp.isdir(path):
            raise ValueError(f'{flag} {path} is a folder; give a file path')
    check_device(args.device)
    names = [n.strip() for n in args.metrics.split(',') if n.strip()]
    payload = score_dataset(args.data, names, parse_name_paths(args.weights, '--weights'), args.ensemble, args.out,
                            args.plot, args.device, args.flush_every)
    report_outputs([f"scored {len(payload['records'])} images with {', '.join(names)}"], 'done')
    return 0
