"""Score every image of an LMDB or image folder with NR-IQA metrics (``gtplus score``), resumably.

Side file (default ``DATA/quality_scores.json``, beside ``meta_info.txt`` for an LMDB; JSON, keys sorted)::

    {
      "format": "gtplus-side-file-1",
      "description": "what the fields mean (one paragraph)",
      "metrics": {"niqe": {"lower_better": true, "weights_path": null}, ...},
      "ensemble": null | {"metrics": ["niqe", "piqe"],
                          "bounds": {"niqe": [min, max], ...},    # dataset min / max of each raw score
                          "lower_better": {"niqe": true, ...}},
      "records": {key: {"niqe": raw, "piqe": raw, "ensemble": s}, ...}
    }

Raw scores are in each metric's own units (NIQE, PIQE: lower is better). ``ensemble`` (with ``--ensemble``) is
IQPIR's score: each metric min-max normalised over this dataset (bounds above), lower-is-better ones flipped,
averaged; ``s`` in [0,1], 1 = best (IQPIR clamps to 0.99 when binning). The layout is the side-file layout of
:mod:`gtplus_data.side_file` (``format`` + ``description`` + ``records``) plus ``metrics`` and ``ensemble``, so
``read_side_file(DATA, 'quality_scores')`` returns the records.

Resuming: raw scores are flushed atomically every ``flush_every`` images to ``<out>.partial.json``; a rerun skips
the keys found there (or in a finished ``<out>`` with the same metrics). Images are scored one at a time, so a run
killed at any point and rerun writes exactly the file an uninterrupted run writes. The partial file is removed at
the end.
"""
import json
import os
import os.path as osp

import numpy as np

from gtplus_data.atomic_file import atomic_output
from gtplus_data.image_source import input_source
from gtplus_data.image_util import image_to_tensor
from gtplus_data.side_file import SIDE_FILE_FORMAT, write_json
from gtplus_models.quality import create_quality_metric, normalise_scores

SIDE_FILE_NAME = 'quality_scores'
DESCRIPTION = ('Per-image NR-IQA scores (pyiqa, RGB input in [0,1]). records[key][metric] is the raw score in the '
               "metric's own units (see metrics[metric].lower_better). records[key].ensemble, if present, is IQPIR's "
               'quality score s in [0,1] (1 = best): each metric min-max normalised over this dataset '
               '(ensemble.bounds), lower-is-better metrics flipped, then averaged.')


def default_paths(data_path, kind):
    """(side file, histogram PNG) default paths for a dataset of ``kind`` ('lmdb' or 'folder').

    An image folder's histogram goes beside the folder, not in it, so it is never scored as an image itself.
    """
    side = osp.join(data_path, f'{SIDE_FILE_NAME}.json')
    if kind == 'lmdb':
        return side, osp.join(data_path, f'{SIDE_FILE_NAME}_hist.png')
    return side, f'{osp.normpath(data_path)}_{SIDE_FILE_NAME}_hist.png'


def metric_signature(names, weights):
    """{metric: {'weights_path': ...}}: what must match for earlier scores to be reused."""
    return {n: {'weights_path': weights.get(n)} for n in names}


def load_done(out, signature):
    """Raw scores already computed with the same metrics and weights: {key: {metric: value}}.

    Read from a finished ``out`` and from ``<out>.partial.json``; files made with other weights are ignored.
    """
    done = {}
    for path in (out, f'{out}.partial.json'):
        if osp.isfile(path):
            with open(path) as f:
                saved = json.load(f)
            names = [n for n in signature if saved.get('metrics', {}).get(n, {}).get('weights_path') ==
                     signature[n]['weights_path']]
            if len(names) == len(signature):
                done.update({k: {n: v[n] for n in names} for k, v in saved.get('records', {}).items()
                             if all(n in v for n in names)})
    return done


def score_image(metrics, img, key, device):
    """{metric: float} for one HxWx3 RGB [0,1] image; ValueError naming the key if a metric fails or gives NaN."""
    tensor = image_to_tensor(img, device)
    scores = {}
    for name, metric in metrics.items():
        try:
            value = float(metric(tensor)[0])
        except (RuntimeError, AssertionError, IndexError) as err:
            raise ValueError(f'{key}: {name} failed on this {img.shape[1]}x{img.shape[0]} image (NIQE needs at least '
                             f'96x96 pixels): {str(err).splitlines()[0]}') from None
        if not np.isfinite(value):
            raise ValueError(f'{key}: {name} gave {value} on this {img.shape[1]}x{img.shape[0]} image '
                             '(too small for the metric? NIQE needs at least 96x96 pixels)')
        scores[name] = value
    return scores


def score_all(source, metrics, out, weights, flush_every=8, device='cpu', progress=True):
    """Raw scores of every key of ``source`` (ImageSource), resuming from and flushing to ``<out>.partial.json``."""
    from tqdm import tqdm
    partial = f'{out}.partial.json'
    signature = metric_signature(list(metrics), weights)
    done = load_done(out, signature)
    done = {k: v for k, v in done.items() if k in set(source.keys)}
    todo = [k for k in source.keys if k not in done]
    for count, key in enumerate(tqdm(todo, desc='score', unit='img', disable=not progress), 1):
        done[key] = score_image(metrics, source.read(key), key, device)
        if count % flush_every == 0:
            write_json(partial, {'metrics': signature, 'records': done})
    return {k: done[k] for k in source.keys}


def build_payload(raw, metrics, weights, ensemble):
    """The side-file dict (see module docstring) from raw {key: {metric: value}}."""
    names = list(metrics)
    lower_better = {n: metrics[n].lower_better for n in names}
    records = {k: dict(v) for k, v in raw.items()}
    summary = None
    if ensemble:
        keys = list(raw)
        columns = {n: np.array([raw[k][n] for k in keys]) for n in names}
        s, _ = normalise_scores(columns, lower_better)
        for key, value in zip(keys, s):
            records[key]['ensemble'] = float(value)
        summary = {'metrics': names, 'lower_better': lower_better,
                   'bounds': {n: [float(columns[n].min()), float(columns[n].max())] for n in names}}
    return {'format': SIDE_FILE_FORMAT, 'description': DESCRIPTION, 'ensemble': summary, 'records': records,
            'metrics': {n: {'lower_better': lower_better[n], 'weights_path': weights.get(n)} for n in names}}


def plot_histograms(payload, path):
    """One histogram panel per metric (and the ensemble) of a side-file payload, saved as PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    columns = list(payload['metrics']) + (['ensemble'] if payload['ensemble'] else [])
    fig = Figure(figsize=(4 * len(columns), 3.2))
    FigureCanvasAgg(fig)  # Agg canvas without pyplot: no global backend switch
    for index, name in enumerate(columns):
        axis = fig.add_subplot(1, len(columns), index + 1)
        values = [record[name] for record in payload['records'].values()]
        axis.hist(values, bins=min(30, max(5, len(values))), color='tab:blue')
        direction = '' if name == 'ensemble' else (' (lower better)' if payload['metrics'][name]['lower_better']
                                                   else ' (higher better)')
        axis.set_title(f'{name}{direction}, n={len(values)}', fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as f:
        fig.savefig(f, format='png', dpi=80)
    return path


def score_dataset(data_path, metric_names, weights=None, ensemble=False, out=None, plot=None, device='cpu',
                  flush_every=8, progress=True):
    """Score every image of ``data_path`` and write the side file and the histogram.

    Args:
        data_path (str): an image folder or BasicSR LMDB (read with ImageSource: RGB [0,1]).
        metric_names (list[str]): pyiqa metric names, e.g. ['niqe', 'piqe'].
        weights (dict[str, str] | None): metric -> local weight file.
        ensemble (bool): add IQPIR's normalised ensemble score.
        out (str | None): side file; default ``DATA/quality_scores.json``.
        plot (str | None): histogram PNG; default beside the side file (beside the folder for image folders).
        device (str): where the metrics run.
        flush_every (int): images between flushes of the partial file.
        progress (bool): show a tqdm bar.

    Returns:
        dict: the side-file payload.
    """
    weights = weights or {}
    if not metric_names:
        raise ValueError('no metrics given (e.g. --metrics niqe,piqe)')
    source = input_source(data_path)
    if not len(source):
        raise ValueError(f'{data_path} holds no images')
    default_out, default_plot = default_paths(data_path, source.kind)
    out, plot = out or default_out, plot or default_plot
    metrics = {n: create_quality_metric(n, weights.get(n), device=device) for n in metric_names}
    raw = score_all(source, metrics, out, weights, flush_every, device, progress)
    payload = build_payload(raw, metrics, weights, ensemble)
    write_json(out, payload)
    if osp.exists(f'{out}.partial.json'):
        os.remove(f'{out}.partial.json')
    plot_histograms(payload, plot)
    return payload
