"""Quality report of the enhanced-supervision quickstart: metrics with names and directions, verdicts, figures."""
import os
import os.path as osp

import numpy as np
import torch

from gtplus_data.lmdb_writer import to_uint8

METRICS = {
    'psnr_vs_gt': {'direction': 'higher is better', 'unit': 'dB', 'reference': 'the (imperfect) GT'},
    'ssim_vs_gt': {'direction': 'higher is better', 'unit': '', 'reference': 'the (imperfect) GT'},
    'psnr_vs_pristine': {'direction': 'higher is better', 'unit': 'dB', 'reference': 'the pristine photo'},
    'ssim_vs_pristine': {'direction': 'higher is better', 'unit': '', 'reference': 'the pristine photo'},
    'niqe': {'direction': 'lower is better', 'unit': '', 'reference': 'none (no-reference, offline NIQE)'},
    'piqe': {'direction': 'lower is better', 'unit': '', 'reference': 'none (no-reference)'},
}
SOURCE_LABELS = {'gt': 'GT', 'enhanced_gt': 'enhanced GT', 'restorer': 'restorer output',
                 'restorer_ornet': 'restorer + ORNet'}


def evaluate_images(sources, references):
    """Metrics per source and image.

    Args:
        sources (dict[str, ImageSource]): images to judge, same keys.
        references (dict[str, ImageSource]): 'gt' and 'pristine'.

    Returns:
        dict: {source: {key: {metric: value}}}.
    """
    from basicsr.metrics import calculate_psnr, calculate_ssim

    from gtplus_models.quality import create_quality_metric
    nr_metrics = {name: create_quality_metric(name) for name in ('niqe', 'piqe')}
    results = {}
    for name, source in sources.items():
        results[name] = {}
        for key in source.keys:
            img = source.read(key)
            row = {}
            for ref_name, ref in references.items():
                ref_img = to_uint8(ref.read(key))
                psnr = float(calculate_psnr(to_uint8(img), ref_img, crop_border=0))
                row[f'psnr_vs_{ref_name}'] = psnr if np.isfinite(psnr) else None  # identical images: JSON null
                row[f'ssim_vs_{ref_name}'] = float(calculate_ssim(to_uint8(img), ref_img, crop_border=0))
            tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
            with torch.no_grad():
                for metric_name, metric in nr_metrics.items():
                    row[metric_name] = float(metric(tensor).item())
            results[name][key] = row
    return results


def mean_or_none(values):
    """Mean of the values, None if any is None (PSNR of an image against itself)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def fmt(value):
    return 'identical' if value is None else f'{value:.4f}'


def better(metric, new, old):
    higher = METRICS[metric]['direction'].startswith('higher')
    return new > old if higher else new < old


def verdicts(means):
    """Plain statements comparing restorer + ORNet with the restorer, and the enhanced GT with the GT."""
    lines = []
    for new, old in (('restorer_ornet', 'restorer'), ('enhanced_gt', 'gt')):
        for metric in METRICS:
            if means[new][metric] is None or means[old][metric] is None:
                continue  # e.g. PSNR of the GT against itself
            delta = means[new][metric] - means[old][metric]
            verdict = 'better' if better(metric, means[new][metric], means[old][metric]) else 'worse or equal'
            lines.append(f'{SOURCE_LABELS[new]} vs {SOURCE_LABELS[old]}: {metric} {means[old][metric]:.4f} -> '
                         f'{means[new][metric]:.4f} ({delta:+.4f}, {METRICS[metric]["direction"]}): {verdict}')
    return lines


def summarise(per_image, cond, test_keys):
    """Means over the held-out images, the metric definitions and honest verdicts."""
    means = {name: {m: mean_or_none([row[m] for row in rows.values()]) for m in METRICS}
             for name, rows in per_image.items()}
    ornet_gain = [m for m in METRICS if better(m, means['restorer_ornet'][m], means['restorer'][m])]
    return {
        'cond': cond,
        'held_out_images': list(test_keys),
        'metrics': METRICS,
        'sources': SOURCE_LABELS,
        'mean': means,
        'per_image': per_image,
        'verdicts': verdicts(means),
        'summary': (f'ORNet (c={cond}) after the restorer improved {len(ornet_gain)} of {len(METRICS)} metrics '
                    f'({", ".join(ornet_gain) or "none"}) on {len(test_keys)} held-out photos; see verdicts for '
                    'the others. Two photos and minutes of CPU training: treat differences as indicative only.'),
    }


def report_markdown(report):
    """The report as a Markdown table plus the verdicts."""
    header = '| source | ' + ' | '.join(f'{m} ({"↑" if v["direction"].startswith("higher") else "↓"})'
                                       for m, v in report['metrics'].items()) + ' |'
    lines = [f'# gtplus quickstart report (c = {report["cond"]})', '', header,
             '|' + ' --- |' * (len(report['metrics']) + 1)]
    for name, values in report['mean'].items():
        lines.append(f'| {report["sources"][name]} | ' + ' | '.join(fmt(values[m]) for m in report['metrics']) +
                     ' |')
    lines += ['', report['summary'], ''] + [f'- {v}' for v in report['verdicts']]
    if 'timings_s' in report:
        lines += ['', 'Timings (s): ' + ', '.join(f'{k} {v}' for k, v in report['timings_s'].items())]
    return '\n'.join(lines) + '\n'


def quickstart_figures(out, refine_dir, cfmg, variant_paths, cond, sweep_conds):
    """Write OUT/figures/: comparison.png, masks.png, sr_variants.png, c_sweep.png and enhanced_gt_sweep.png (see the
    README)."""
    from gtplus_data.image_source import ImageSource
    from gtplus_models.enhance_gt import mask_panels, read_sources, source_names
    from gtplus_models.enhanced_supervision import enhance
    from gtplus_models.figures import labelled_strip, stack_rows, write_sources_preview
    from gtplus_models.refine import cond_folder, write_png
    data = osp.join(out, 'data')
    figures = osp.join(out, 'figures')
    os.makedirs(figures, exist_ok=True)
    panels = {
        'LQ': ImageSource(osp.join(data, 'test_lq.lmdb')),
        'restorer': ImageSource(osp.join(refine_dir, 'restored')),
        f'+ORNet c={cond:g}': ImageSource(osp.join(refine_dir, cond_folder(cond))),
        'GT': ImageSource(osp.join(data, 'test_gt.lmdb')),
        f'enhanced GT c={cond:g}': ImageSource(osp.join(data, f'test_enhanced_gt_c{cond:.2f}.lmdb')),
        'pristine': ImageSource(osp.join(data, 'test_pristine.lmdb')),
    }
    keys = panels['LQ'].keys
    rows = [labelled_strip([(f'{label} [{key}]' if i == 0 else label, to_uint8(src.read(key)))
                            for i, (label, src) in enumerate(panels.items())]) for key in keys]
    write_png(osp.join(figures, 'comparison.png'), stack_rows(rows))

    gt_source, variant_sources = panels['GT'], [ImageSource(p) for p in variant_paths]
    mask_rows = []
    for key in keys:
        gt, _ = read_sources(gt_source, variant_sources, key, 'cpu')
        masks = mask_panels(cfmg, gt, cond, source_names(variant_paths))
        mask_rows.append(labelled_strip([(f'{label} [{key}]', img) for label, img in masks]))
    write_png(osp.join(figures, 'masks.png'), stack_rows(mask_rows))
    write_sources_preview([('GT', gt_source)] + list(zip(source_names(variant_paths)[1:], variant_sources)),
                          osp.join(figures, 'sr_variants.png'), num_keys=len(keys))

    sweep = ImageSource(osp.join(refine_dir, 'sweep'))
    write_png(osp.join(figures, 'c_sweep.png'), stack_rows([to_uint8(sweep.read(k)) for k in keys]))

    enhanced_rows = []
    for key in keys:
        gt, sources = read_sources(gt_source, variant_sources, key, 'cpu')
        panels = [(f'GT [{key}]', to_uint8(gt[0].numpy().transpose(1, 2, 0)))]
        for value in sweep_conds:
            with torch.no_grad():
                enhanced = enhance(cfmg, gt, sources, value)[0].clamp(0, 1)[0].numpy().transpose(1, 2, 0)
            panels.append((f'enhanced GT c={value:g}', to_uint8(enhanced)))
        enhanced_rows.append(labelled_strip(panels))
    write_png(osp.join(figures, 'enhanced_gt_sweep.png'), stack_rows(enhanced_rows))
