"""The quickstart reports, shared by every pipeline: metrics with names and directions, means, plain verdicts,
report.json and report.md.

Each pipeline judges its outputs on held-out photos against two references: the imperfect target it trained on
(``gt``) and the pristine photo (``pristine``), plus two no-reference metrics (offline NIQE, PIQE). It names its
sources (``labels``) and the comparisons that isolate its method (``comparisons``: (method, control) pairs).
"""
import json
import os.path as osp

import numpy as np
import torch

from gtplus_data.atomic_file import atomic_write
from gtplus_data.image_util import image_to_tensor, to_uint8

METRICS = {
    'psnr_vs_gt': {'direction': 'higher is better', 'unit': 'dB', 'reference': 'the (imperfect) GT'},
    'ssim_vs_gt': {'direction': 'higher is better', 'unit': '', 'reference': 'the (imperfect) GT'},
    'psnr_vs_pristine': {'direction': 'higher is better', 'unit': 'dB', 'reference': 'the pristine photo'},
    'ssim_vs_pristine': {'direction': 'higher is better', 'unit': '', 'reference': 'the pristine photo'},
    'niqe': {'direction': 'lower is better', 'unit': '', 'reference': 'none (no-reference, offline NIQE)'},
    'piqe': {'direction': 'lower is better', 'unit': '', 'reference': 'none (no-reference)'},
}


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
            tensor = image_to_tensor(img)
            with torch.no_grad():
                for metric_name, metric in nr_metrics.items():
                    row[metric_name] = float(metric(tensor).item())
            results[name][key] = row
    return results


class ArraySource:
    """Images held in memory, read like an ImageSource (``keys``, ``read``) by :func:`evaluate_images`.

    Args:
        images (dict[str, ndarray]): key -> HxWx3 float32 RGB in [0,1].
    """

    def __init__(self, images):
        self.images = dict(images)
        self.keys = sorted(self.images)

    def read(self, key):
        return self.images[key]


def measured_metrics(rows):
    """The names of METRICS that ``rows`` ({key: {metric: value}}) hold, in METRICS order: a pipeline with one
    reference (an SR pipeline has no imperfect GT, only the pristine HR) measures fewer than all of them."""
    first = next(iter(rows.values()))
    return [m for m in METRICS if m in first]


def mean_table(per_image):
    """{source: {metric: mean over images (None if any is None)}} from :func:`evaluate_images` output."""
    return {name: {m: mean_or_none([row[m] for row in rows.values()]) for m in measured_metrics(rows)}
            for name, rows in per_image.items()}


def mean_or_none(values):
    """Mean of the values, None if any is None (PSNR of an image against itself)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def fmt(value):
    return 'identical' if value is None else f'{value:.4f}'


def better(metric, new, old):
    higher = METRICS[metric]['direction'].startswith('higher')
    return new > old if higher else new < old


def beats_on(new, old, metrics=('niqe', 'piqe')):
    """True when image metrics ``new`` are better than ``old`` on every one of ``metrics`` (rows of
    :func:`evaluate_images`)."""
    return all(better(m, new[m], old[m]) for m in metrics)


def beats_reference(new, old, tolerance_db=0.1):
    """The rule for a target that claims to be better than the GT: PSNR to the pristine photo up, or NIQE down with
    PSNR to the pristine photo at most ``tolerance_db`` lower (rows of :func:`evaluate_images`)."""
    psnr_new, psnr_old = new['psnr_vs_pristine'], old['psnr_vs_pristine']
    return psnr_new > psnr_old or (new['niqe'] < old['niqe'] and psnr_new >= psnr_old - tolerance_db)


def share_beating(per_new, per_old, rule):
    """Fraction in [0, 1] of the images of ``per_old`` ({key: metric row}) on which ``rule(new_row, old_row)``."""
    return float(np.mean([rule(per_new[key], per_old[key]) for key in per_old]))


def verdicts(means, comparisons, labels):
    """Plain statements, one per metric, for each (method, control) pair of ``comparisons``.

    Args:
        means (dict): {source: {metric: mean or None}}.
        comparisons (list[tuple[str, str]]): (new, old) source names.
        labels (dict[str, str]): source name -> label.
    """
    lines = []
    for new, old in comparisons:
        for metric in measured_metrics({new: means[new]}):
            if means[new][metric] is None or means[old][metric] is None:
                continue  # e.g. PSNR of the GT against itself
            delta = means[new][metric] - means[old][metric]
            verdict = 'better' if better(metric, means[new][metric], means[old][metric]) else 'worse or equal'
            lines.append(f'{labels[new]} vs {labels[old]}: {metric} {means[old][metric]:.4f} -> '
                         f'{means[new][metric]:.4f} ({delta:+.4f}, {METRICS[metric]["direction"]}): {verdict}')
    return lines


def summarise(per_image, test_keys, labels, comparisons):
    """Means over the held-out images, the metric definitions and the verdicts of each comparison.

    Returns:
        dict: held_out_images, metrics, sources, mean, per_image, verdicts (a pipeline adds its summary).
    """
    means = mean_table(per_image)
    return {
        'held_out_images': list(test_keys),
        'metrics': {m: METRICS[m] for m in measured_metrics(means)},
        'sources': labels,
        'mean': means,
        'per_image': per_image,
        'verdicts': verdicts(means, comparisons, labels),
    }


def improved_metrics(means, new, old):
    """The metrics on which source ``new`` beats source ``old`` (None values skipped)."""
    return [m for m in measured_metrics({new: means[new]})
            if means[new][m] is not None and means[old][m] is not None and better(m, means[new][m], means[old][m])]


def report_markdown(report, title):
    """The report as a Markdown table (plus any ``tables`` of the report: {title, column, rows} with the report's
    metrics as columns, or with their own ``headers``: {value key: column label}), the summary, the verdicts and the
    timings."""
    metric_headers = {m: f'{m} ({"↑" if v["direction"].startswith("higher") else "↓"})'
                      for m, v in report['metrics'].items()}

    def table_lines(first_column, headers, rows):
        return ['| ' + ' | '.join([first_column, *headers.values()]) + ' |', '|' + ' --- |' * (len(headers) + 1)] + [
            f'| {label} | ' + ' | '.join(fmt(values[m]) if not isinstance(values[m], str) else values[m]
                                         for m in headers) + ' |' for label, values in rows.items()]

    lines = [f'# {title}', ''] + table_lines(
        'source', metric_headers, {report['sources'][name]: values for name, values in report['mean'].items()})
    for table in report.get('tables', []):
        lines += ['', f'**{table["title"]}**', ''] + table_lines(table['column'], table.get('headers', metric_headers),
                                                                table['rows'])
    lines += ['', report['summary'], ''] + [f'- {v}' for v in report['verdicts']]
    if 'timings_s' in report:
        lines += ['', 'Timings (s): ' + ', '.join(f'{k} {v}' for k, v in report['timings_s'].items())]
    return '\n'.join(lines) + '\n'


def write_report(out, report, title):
    """OUT/report.json and OUT/report.md."""
    atomic_write(osp.join(out, 'report.json'), json.dumps(report, indent=1))
    atomic_write(osp.join(out, 'report.md'), report_markdown(report, title))
