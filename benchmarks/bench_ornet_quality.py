"""Quality gain of each ORNet preset in the quickstart setting, relative to the official width-64 configuration.

Reuses a finished `gtplus quickstart OUT_DIR` (its data, restorer and CFMG), trains ORNet with each preset for the
same number of iterations through `gtplus train` (the quickstart's ornet.yml template, preset overridden), refines
the held-out LQ after the restorer at c = 0.3 and reports each metric's change over the restorer output, and the
share of the official configuration's change that each preset keeps.

    python benchmarks/bench_ornet_quality.py out/quickstart [--iters N] [--presets official,small,light]

Every preset trains as long as the quickstart's ORNet (gtplus_models/quickstart/templates/enhanced_supervision/
ornet.yml) unless --iters is given.
"""
import argparse
import os.path as osp
import time

import torch

TEMPLATES = 'enhanced_supervision'  # the quickstart pipeline whose stages this benchmark reuses


def train_preset(out, preset, iters):
    from gtplus_models.quickstart.common import train_stage
    return train_stage(out, TEMPLATES, 'ornet', iters, [f'network_g:preset={preset}'],
                       experiment=f'bench_ornet_{preset}')


def refine_with(out, preset, weights, cond):
    from gtplus_data.image_source import ImageSource
    from gtplus_models.checkpoints import build_frozen_network
    from gtplus_models.quickstart.common import load_stage_network
    from gtplus_models.tools.refine import cond_folder, refine_source
    device = torch.device('cpu')
    restorer = load_stage_network(out, TEMPLATES, 'restorer')
    ornet = build_frozen_network({'type': 'ORNet', 'preset': preset}, weights, preset, device)
    folder = osp.join(out, 'bench_ornet_quality', preset)
    refine_source(ImageSource(osp.join(out, 'data', 'test_lq.lmdb')), folder, restorer, ornet, [cond])
    return folder, osp.join(folder, cond_folder(cond))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('out', nargs='?', default='out/quickstart', help='a finished gtplus quickstart folder')
    parser.add_argument('--iters', type=int, default=None, help='training iterations (default: the quickstart\'s)')
    parser.add_argument('--presets', default='official,small,light')
    parser.add_argument('--cond', type=float, default=0.3)
    args = parser.parse_args()
    import gtplus_models  # noqa: F401
    from gtplus_data.image_source import ImageSource
    from gtplus_models.quickstart.report import METRICS, evaluate_images, mean_or_none
    out = osp.abspath(args.out)
    if not osp.isfile(osp.join(out, 'report.json')):
        parser.error(f'{out} is not a finished quickstart; run gtplus quickstart {args.out} first')
    data = osp.join(out, 'data')
    references = {'gt': ImageSource(osp.join(data, 'test_gt.lmdb')),
                  'pristine': ImageSource(osp.join(data, 'test_pristine.lmdb'))}
    changes, seconds = {}, {}
    for preset in args.presets.split(','):
        start = time.time()
        weights = train_preset(out, preset, args.iters)
        seconds[preset] = time.time() - start
        folder, refined = refine_with(out, preset, weights, args.cond)
        rows = evaluate_images({'restorer': ImageSource(osp.join(folder, 'restored')),
                                'ornet': ImageSource(refined)}, references)
        means = {name: {m: mean_or_none([r[m] for r in per.values()]) for m in METRICS} for name, per in rows.items()}
        changes[preset] = {m: means['ornet'][m] - means['restorer'][m] for m in METRICS}
    iters = args.iters or 'the quickstart\'s'
    print(f'ORNet presets after the quickstart restorer, {iters} training iterations each, c = {args.cond}, '
          'held-out photos; change over the restorer output (sign: see direction) and share of the official change')
    print('| preset | train s | ' + ' | '.join(f'Δ{m} ({METRICS[m]["direction"].split()[0]})' for m in METRICS) +
          ' |')
    print('|' + ' --- |' * (len(METRICS) + 2))
    base = changes.get('official')
    for preset, change in changes.items():
        cells = []
        for m in METRICS:
            share = f' ({change[m] / base[m]:.0%})' if base and abs(base[m]) > 1e-9 else ''
            cells.append(f'{change[m]:+.4f}{share}')
        print(f'| {preset} | {seconds[preset]:.0f} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
