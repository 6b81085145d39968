"""Where the enhanced-supervision gain comes from: CFMG sources x c x ORNet input, against the controls.

Runs (or reuses) ``gtplus quickstart OUT`` (embedded photos, or ``--photos DIR [--holdout ...]``), then, for each
set of CFMG sources besides the GT,
- ``standin``: the learned stand-in enhancer's x1/x2/x3 variants,
- ``detail``: the training-free detail family (USM, Wiener and Richardson-Lucy at the GT's blur),
- ``both``: all six,
trains a CFMG and an ORNet on them exactly as the quickstart's stages do (its templates, its iterations), and one
control ORNet with ``train.fixed_cond: 0`` (the same network trained towards Î(0), the CFMG's fidelity-only output,
i.e. about the GT). On the held-out photos it reports, at each c in 0, 0.3, 0.6, 1:
- the enhanced GT Î(c): PSNR/SSIM to the pristine photo, NIQE, PIQE, and the share of photos on which it beats the
  GT (PSNR to pristine up, or NIQE down with PSNR within 0.1 dB);
- ORNet(c) applied to the GT and to the restorer's output: the same metrics, and the share of photos on which it
  beats the c = 0 control on the same input on both NIQE and PIQE, with the mean PSNR change against it.
Then the issue's two targets for each source set at c = 0.3. Tables go to stdout (Markdown) and, with the per-photo
rows, to OUT/bench_enhanced_supervision/results.json; figures to OUT/bench_enhanced_supervision/*.png.

    PYTHONPATH=. python benchmarks/bench_enhanced_supervision.py [OUT] [--photos DIR] [--holdout A,B] [--iters N]
                                                                 [--size S]

Every training is a ``gtplus train --auto_resume`` run under OUT/experiments/bench_es_*, skipped when its weights
exist, so an interrupted benchmark resumes. --iters shortens every training (a preview, not a measurement).
"""
import argparse
import json
import os
import os.path as osp
import time

import torch

TEMPLATES = 'enhanced_supervision'
CONDS = (0.0, 0.3, 0.6, 1.0)
TARGET_COND = 0.3
TARGET_SHARE = 0.8
MAX_PSNR_LOSS = 0.3


def source_sets(out, split):
    """{set name: variant LMDB paths} of a split (the quickstart's stand-in and detail variants)."""
    from gtplus_models.quickstart.enhanced_supervision import SOURCE_SETS, set_roots
    return {name: set_roots(out, split, name) for name in SOURCE_SETS}


def yaml_list(paths):
    return '[' + ', '.join(repr(p) for p in paths) + ']'


def train_set(out, name, iters):
    """Train the CFMG and the ORNet of source set ``name`` (the quickstart's own for its SOURCE_SET, unless --iters
    differs from the quickstart's); returns (cfmg weights, ornet weights)."""
    from gtplus_models.quickstart.common import latest_weights, train_stage
    from gtplus_models.quickstart.enhanced_supervision import SOURCE_SET
    if name == SOURCE_SET and iters is None and osp.isfile(latest_weights(out, 'ornet')):
        return latest_weights(out, 'cfmg'), latest_weights(out, 'ornet')
    variants = source_sets(out, 'train')[name]
    common = [f'datasets:train:dataroot_variants={yaml_list(variants)}']
    cfmg = train_stage(out, TEMPLATES, 'cfmg', iters, common + [f'network_g:num_sources={len(variants) + 1}'],
                       experiment=f'bench_es_cfmg_{name}')
    ornet = train_stage(out, TEMPLATES, 'ornet', iters,
                        common + [f'network_cfmg:num_sources={len(variants) + 1}', f'path:pretrain_network_cfmg={cfmg}'],
                        experiment=f'bench_es_ornet_{name}')
    return cfmg, ornet


def train_control(out, iters, cfmg, num_sources, variants):
    """The c = 0 control: the quickstart's ORNet trained with ``train.fixed_cond: 0``."""
    from gtplus_models.quickstart.common import train_stage
    return train_stage(out, TEMPLATES, 'ornet', iters,
                       [f'datasets:train:dataroot_variants={yaml_list(variants)}', 'train:fixed_cond=0',
                        f'network_cfmg:num_sources={num_sources}', f'path:pretrain_network_cfmg={cfmg}'],
                       experiment='bench_es_ornet_c0')


def load(out, stage, weights, num_sources=None):
    from gtplus_models.checkpoints import build_frozen_network
    from gtplus_models.quickstart.common import network_opt
    opt = network_opt(out, TEMPLATES, stage)
    if num_sources:
        opt['num_sources'] = num_sources
    return build_frozen_network(opt, weights, f'{stage} weights', torch.device('cpu'))


def ornet_images(ornet, inputs, folder, conds):
    """ORNet(input, c) for each input source, as written by ``gtplus refine`` (PNG): {input: {c: ImageSource}}."""
    from gtplus_data.image_source import ImageSource
    from gtplus_models.tools.refine import cond_folder, refine_source
    result = {}
    for name, source in inputs.items():
        refine_source(source, osp.join(folder, name), None, ornet, list(conds))
        result[name] = {c: ImageSource(osp.join(folder, name, cond_folder(c))) for c in conds}
    return result


def cell(per_image):
    """Mean PSNR/SSIM to pristine, NIQE and PIQE of {key: metric row}."""
    from gtplus_models.quickstart.report import mean_or_none
    return {m: mean_or_none([row[m] for row in per_image.values()])
            for m in ('psnr_vs_pristine', 'ssim_vs_pristine', 'niqe', 'piqe')}


def metrics_row(values):
    return ' | '.join('–' if values[m] is None else f'{values[m]:.{4 if m.startswith("ssim") else 2}f}'
                      for m in ('psnr_vs_pristine', 'ssim_vs_pristine', 'niqe', 'piqe'))


def make_figure(path, key, gt, enhanced, refined, restorer, control):
    """One held-out photo: per source set, GT | Î(c) for each c, and restorer | + control | + ORNet(c)."""
    from gtplus_data.image_util import to_uint8, write_png
    from gtplus_data.figures import labelled_strip, stack_rows
    rows = []
    for name in enhanced:
        rows.append(labelled_strip([(f'GT [{key}]', to_uint8(gt.read(key)))] +
                                   [(f'{name}: Î(c={c:g})', to_uint8(imgs[key])) for c, imgs in
                                    enhanced[name].items()]))
        rows.append(labelled_strip([('restorer', to_uint8(restorer.read(key))),
                                    ('+ORNet trained at c=0', to_uint8(control.read(key)))] +
                                   [(f'{name}: +ORNet c={c:g}', to_uint8(src.read(key))) for c, src in
                                    refined[name]['restorer'].items()]))
    write_png(path, stack_rows(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out', nargs='?', default='out/quickstart', help='quickstart folder (made if unfinished)')
    parser.add_argument('--photos', default=None, help='a folder of your photographs (as gtplus quickstart)')
    parser.add_argument('--holdout', default=None, help='comma list of photo names to hold out')
    parser.add_argument('--iters', type=int, default=None, help='shorten every training (a preview)')
    parser.add_argument('--size', type=int, default=256, help='photo size of a new quickstart (as gtplus quickstart)')
    parser.add_argument('--sets', default='standin,detail,both', help='source sets to compare')
    args = parser.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import gtplus_models  # noqa: F401
    from gtplus_data.image_source import ImageSource
    from gtplus_models.quickstart import enhanced_supervision as pipeline
    from gtplus_models.tools.enhance_gt import enhanced_sweep
    from gtplus_models.quickstart.report import (ArraySource, beats_on, beats_reference, evaluate_images,
                                                 share_beating)
    out = osp.abspath(args.out)
    start = time.time()
    if not osp.isfile(osp.join(out, 'report.json')):
        pipeline.run(out, size=args.size, iters=args.iters, photos=args.photos,
                     holdout=args.holdout.split(',') if args.holdout else None)
    sets = args.sets.split(',')
    unknown = set(sets) - {'standin', 'detail', 'both'}
    if unknown:
        parser.error(f'--sets: unknown {", ".join(sorted(unknown))}; choose from standin, detail, both')
    bench = osp.join(out, 'bench_enhanced_supervision')
    data = osp.join(out, 'data')
    references = {'gt': ImageSource(osp.join(data, 'test_gt.lmdb')),
                  'pristine': ImageSource(osp.join(data, 'test_pristine.lmdb'))}
    restorer = ImageSource(osp.join(out, 'refine', 'restored'))
    inputs = {'gt': references['gt'], 'restorer': restorer}

    weights = {name: train_set(out, name, args.iters) for name in sets}
    control_set = 'detail' if 'detail' in sets else sets[0]
    control_variants = source_sets(out, 'train')[control_set]
    control = train_control(out, args.iters, weights[control_set][0], len(control_variants) + 1, control_variants)

    per_image = {'GT': evaluate_images({'x': inputs['gt']}, references)['x'],
                 'restorer': evaluate_images({'x': restorer}, references)['x']}
    control_out = ornet_images(load(out, 'ornet', control), inputs, osp.join(bench, 'control_c0'), [0.0])
    for name in inputs:
        per_image[f'control:{name}'] = evaluate_images({'x': control_out[name][0.0]}, references)['x']
    enhanced, refined = {}, {}
    for name in sets:
        variants = source_sets(out, 'test')[name]
        cfmg = load(out, 'cfmg', weights[name][0], len(variants) + 1)
        enhanced[name] = enhanced_sweep(cfmg, references['gt'], [ImageSource(p) for p in variants], CONDS)
        refined[name] = ornet_images(load(out, 'ornet', weights[name][1]), inputs, osp.join(bench, name), CONDS)
        for c in CONDS:
            per_image[f'{name}:enhanced:{c:g}'] = evaluate_images({'x': ArraySource(enhanced[name][c])},
                                                                  references)['x']
            for input_name in inputs:
                per_image[f'{name}:{input_name}:{c:g}'] = evaluate_images({'x': refined[name][input_name][c]},
                                                                          references)['x']

    keys = references['gt'].keys
    iterations = args.iters or "the quickstart templates'"
    lines = [f'Held-out photos: {", ".join(keys)} ({len(keys)}); trainings: {iterations} iterations; '
             f'{time.time() - start:.0f} s in all', '',
             '**Enhanced GT Î(c) against the GT** (share: photos where Î(c) has higher PSNR to pristine, or lower '
             'NIQE with PSNR at most 0.1 dB lower)', '',
             '| sources | c | PSNR→pristine | SSIM→pristine | NIQE | PIQE | beats GT |', '|' + ' --- |' * 7,
             f'| GT (baseline) | – | {metrics_row(cell(per_image["GT"]))} | – |']
    for name in sets:
        for c in CONDS:
            rows = per_image[f'{name}:enhanced:{c:g}']
            lines.append(f'| {name} | {c:g} | {metrics_row(cell(rows))} | '
                         f'{share_beating(rows, per_image["GT"], beats_reference):.0%} |')
    lines += ['', '**ORNet(c) against the same network trained at c = 0** (share: photos with lower NIQE *and* '
              'PIQE than the c = 0 control on the same input; ΔPSNR: mean PSNR to pristine minus the control\'s)',
              '', '| sources | input | c | PSNR→pristine | SSIM→pristine | NIQE | PIQE | beats control | ΔPSNR | '
              'beats input alone |', '|' + ' --- |' * 10]
    for input_name, base in (('gt', 'GT'), ('restorer', 'restorer')):
        ctrl = per_image[f'control:{input_name}']
        lines.append(f'| – (input alone) | {input_name} | – | {metrics_row(cell(per_image[base]))} | – | – | – |')
        lines.append(f'| ORNet trained at c=0 (control) | {input_name} | 0 | {metrics_row(cell(ctrl))} | – | – | '
                     f'{share_beating(ctrl, per_image[base], beats_on):.0%} |')
        for name in sets:
            for c in CONDS:
                rows = per_image[f'{name}:{input_name}:{c:g}']
                delta = cell(rows)['psnr_vs_pristine'] - cell(ctrl)['psnr_vs_pristine']
                lines.append(f'| {name} | {input_name} | {c:g} | {metrics_row(cell(rows))} | '
                             f'{share_beating(rows, ctrl, beats_on):.0%} | {delta:+.2f} | '
                             f'{share_beating(rows, per_image[base], beats_on):.0%} |')
    lines += ['', f'**Targets at c = {TARGET_COND}** (≥ {TARGET_SHARE:.0%} of held-out photos)', '']
    targets = {}
    for name in sets:
        enhanced_share = share_beating(per_image[f'{name}:enhanced:{TARGET_COND:g}'], per_image['GT'],
                                       beats_reference)
        rows = per_image[f'{name}:restorer:{TARGET_COND:g}']
        ornet_share = share_beating(rows, per_image['control:restorer'], beats_on)
        loss = cell(per_image['control:restorer'])['psnr_vs_pristine'] - cell(rows)['psnr_vs_pristine']
        targets[name] = {'enhanced_gt_share': enhanced_share, 'ornet_share': ornet_share, 'ornet_psnr_loss_db': loss,
                         'enhanced_gt_met': enhanced_share >= TARGET_SHARE,
                         'ornet_met': ornet_share >= TARGET_SHARE and loss <= MAX_PSNR_LOSS}
        lines.append(f'- {name}: enhanced GT beats the GT on {enhanced_share:.0%} '
                     f'({"met" if targets[name]["enhanced_gt_met"] else "NOT met"}); restorer + ORNet beats '
                     f'restorer + ORNet(c=0) on NIQE and PIQE on {ornet_share:.0%}, PSNR to pristine {-loss:+.2f} dB '
                     f'({"met" if targets[name]["ornet_met"] else "NOT met"})')
    text = '\n'.join(lines)
    print(text)
    os.makedirs(bench, exist_ok=True)
    with open(osp.join(bench, 'results.json'), 'w') as f:
        json.dump({'held_out': list(keys), 'iters': args.iters, 'per_image': per_image, 'targets': targets,
                   'table': text}, f, indent=1)
    for key in keys:
        make_figure(osp.join(bench, f'grid_{key}.png'), key, references['gt'], enhanced, refined, restorer,
                    control_out['restorer'][0.0])


if __name__ == '__main__':
    main()
