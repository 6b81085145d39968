"""``gtplus degradation-report``: colour shift and diversity of synthesized LQ images, several pair sets side by side.

A pair set is ``PAIRS_PREFIX_lq.lmdb`` + ``PAIRS_PREFIX_gt.lmdb`` with the same keys (what ``gtplus synthesize`` and
``gtplus make-lmdb --lq --gt`` write). Its scale s is read from the sizes (GT = s x LQ, one s for the whole set).
Every LQ image is compared with HR↓, its GT downscaled by s with MATLAB's bicubic ``imresize`` and rounded to 8 bits
(:func:`gtplus_models.tools.synthesize.bicubic_down`): the LQ a plain bicubic pipeline would have made.

Colour shift (the paper's measure; larger ΔE, worse SR models): per image, the mean over its pixels of the
CIEDE2000 colour difference ΔE00 between HR↓ and LQ, both converted from sRGB (D65) to CIELAB by
``skimage.color.rgb2lab``, ΔE by ``skimage.color.deltaE_ciede2000`` (kL = kC = kH = 1). Per set: the mean,
median, 90th percentile and maximum over its images.

Diversity (how varied the degradations are across images; the paper found diversity to help). The paper takes the
entropy of a trained degradation classifier's predictions; no such classifier exists offline, so gtplus clusters
what the degradations do instead:

1. per image, seven statistics of LQ against HR↓ (:data:`FEATURES`, on the LQ grid, luma by
   ``skimage.color.rgb2gray``, values on the 0-255 scale where they are intensities):
   ``residual_mean_r/g/b`` (mean of LQ - HR↓ per channel: colour and brightness shift), ``residual_std`` (std of
   the luma residual: overall strength), ``sharpness`` (log2 of the Laplacian energy of LQ over that of HR↓: < 0
   blur, > 0 noise, ringing or over-sharpening), ``noise`` (Immerkær's noise σ estimate of LQ minus that of HR↓)
   and ``blockiness`` (the 8x8 JPEG grid: mean absolute step across block boundaries over the mean step elsewhere,
   of LQ minus that of HR↓);
2. each statistic standardised (z-score) over all images of all sets of the report together;
3. k-means over those images together (``scipy.cluster.vq.kmeans2``, k-means++ from a fixed seed, the best of
   :data:`KMEANS_RESTARTS` by inertia; k = ``clusters``, at most the number of distinct vectors);
4. per set, the Shannon entropy of its images' cluster histogram, divided by log2 k: 0 when every image has the
   same kind of degradation, 1 when they spread evenly over all k kinds (also given in bits).

Because the clusters are fitted to all sets of one report, diversity ranks the sets of that report; values from
different reports are not comparable, and a set alone is only compared with itself (its images still split into k
clusters). Set sizes should be similar: a set smaller than k cannot fill every cluster.

Outputs in ``OUT_DIR``: ``report.json`` (every number, per-image ΔE included), ``report.md`` (one column per
set), ``samples.png`` (rows of HR↓ | LQ of the first keys, the sets side by side, whole and centre-enlarged) and
``delta_e_hist.png`` (per-image ΔE, one series per set).
"""
import math
import os
import os.path as osp
import warnings
from typing import NamedTuple

import cv2
import numpy as np

from gtplus_data.atomic_file import atomic_write
from gtplus_data.image_source import ImageSource, describe_key_mismatch
from gtplus_data.image_util import to_uint8, write_png
from gtplus_data.make_lmdb import paired_lmdb_paths
from gtplus_data.side_file import write_json
from gtplus_data.figures import preview_rows, stack_rows
from gtplus_models.tools.refine import check_output_folder
from gtplus_models.tools.synthesize import bicubic_down

REPORT_FORMAT = 'gtplus-degradation-report-1'
FEATURES = ('residual_mean_r', 'residual_mean_g', 'residual_mean_b', 'residual_std', 'sharpness', 'noise',
            'blockiness')
DEFAULT_CLUSTERS = 8
KMEANS_RESTARTS = 10
KMEANS_SEED = 0
JPEG_BLOCK = 8


class PairSet(NamedTuple):
    """One pair set of the report.

    Attributes:
        name (str): its column title (the prefix's base name, or the whole prefix if base names repeat).
        prefix (str): PAIRS_PREFIX as given.
        lq, gt (ImageSource): its LMDBs, with the same keys.
    """
    name: str
    prefix: str
    lq: ImageSource
    gt: ImageSource


def read_pair_sets(prefixes):
    """Open every ``PAIRS_PREFIX_{lq,gt}.lmdb`` and check that each pair has the same, non-empty keys.

    Raises:
        FileNotFoundError: naming the prefix and the missing (or unfinished) LMDB.
        ValueError: naming the prefix and the keys only one side has.
    """
    if not prefixes:
        raise ValueError('give at least one PAIRS_PREFIX')
    names = [osp.basename(osp.normpath(p)) for p in prefixes]
    if len(set(names)) != len(names):
        names = list(prefixes)
    sets = []
    for name, prefix in zip(names, prefixes):
        lq_path, gt_path = paired_lmdb_paths(prefix)
        try:
            lq, gt = ImageSource(lq_path), ImageSource(gt_path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'PAIRS_PREFIX {prefix}: {err} (a pair set is PREFIX_lq.lmdb and PREFIX_gt.lmdb, '
                                    'as synthesize and make-lmdb --lq/--gt write them)') from None
        mismatch = describe_key_mismatch(lq.keys, gt.keys, lq_path, gt_path)
        if mismatch:
            raise ValueError(f'PAIRS_PREFIX {prefix}: LQ and GT keys differ: {mismatch}')
        if not lq.keys:
            raise ValueError(f'PAIRS_PREFIX {prefix}: {lq_path} holds no images')
        sets.append(PairSet(name, prefix, lq, gt))
    return sets


def infer_scale(gt_shape, lq_shape, where):
    """The integer s with GT (h, w) = s x LQ (h, w); ValueError naming ``where`` if there is none."""
    scale = gt_shape[0] // max(lq_shape[0], 1)
    if scale < 1 or tuple(gt_shape[:2]) != (lq_shape[0] * scale, lq_shape[1] * scale):
        raise ValueError(f'{where}: GT {gt_shape[0]}x{gt_shape[1]} is not an integer multiple of LQ '
                         f'{lq_shape[0]}x{lq_shape[1]}')
    return scale


# ------------------------------------------------------------------------------------------------------------ #
# Colour shift
# ------------------------------------------------------------------------------------------------------------ #


def delta_e_map(reference, image):
    """Per-pixel CIEDE2000 ΔE00 between two sRGB images.

    Args:
        reference, image (ndarray): (H, W, 3) RGB in [0,1] (float or uint8), the same size.

    Returns:
        ndarray: (H, W) float64, ΔE00 >= 0 (about 1: just noticeable; 2-10: seen at a glance).
    """
    from skimage.color import deltaE_ciede2000, rgb2lab
    return deltaE_ciede2000(rgb2lab(reference), rgb2lab(image))


def image_delta_e(reference, image):
    """The colour shift of one image: the mean of :func:`delta_e_map` over its pixels."""
    return float(delta_e_map(reference, image).mean())


# ------------------------------------------------------------------------------------------------------------ #
# Residual statistics
# ------------------------------------------------------------------------------------------------------------ #


def noise_sigma(gray):
    """Immerkær's (1996) fast noise σ estimate of a gray image (H, W >= 3), in its own units.

    Hand-written: skimage's ``estimate_sigma`` needs PyWavelets, which gtplus does not install.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    response = cv2.filter2D(gray.astype(np.float64), cv2.CV_64F, kernel)[1:-1, 1:-1]
    return math.sqrt(math.pi / 2) * float(np.abs(response).sum()) / (6 * response.size)


def blockiness(gray, block=JPEG_BLOCK):
    """Mean absolute step across ``block`` boundaries over the mean step elsewhere, averaged over both axes (1: no
    grid; an axis with no boundary, or nothing else, counts as 1)."""
    ratios = []
    for steps in (np.abs(np.diff(gray, axis=1)), np.abs(np.diff(gray, axis=0)).T):
        boundary = np.arange(steps.shape[1]) % block == block - 1
        if boundary.any() and not boundary.all():
            ratios.append(steps[:, boundary].mean() / (steps[:, ~boundary].mean() + 1e-8))
        else:
            ratios.append(1.)
    return float(np.mean(ratios))


def laplacian_energy(gray):
    """Mean squared Laplacian (4-neighbour) of a gray image: its high-frequency energy."""
    return float(np.mean(cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F) ** 2))


def residual_features(reference, image):
    """The statistics of :data:`FEATURES` for one image (see the module docstring).

    Args:
        reference (ndarray): HR↓, (h, w, 3) float RGB in [0,1], h and w >= 3.
        image (ndarray): the LQ, the same size and range.

    Returns:
        ndarray: [len(FEATURES)] float64.
    """
    from skimage.color import rgb2gray
    reference, image = reference.astype(np.float64), image.astype(np.float64)
    residual = image - reference
    ref_gray, img_gray = rgb2gray(reference), rgb2gray(image)
    return np.array([
        *(residual.reshape(-1, 3).mean(0) * 255),
        float((img_gray - ref_gray).std() * 255),
        math.log2((laplacian_energy(img_gray) + 1e-8) / (laplacian_energy(ref_gray) + 1e-8)),
        (noise_sigma(img_gray) - noise_sigma(ref_gray)) * 255,
        blockiness(img_gray) - blockiness(ref_gray),
    ])


# ------------------------------------------------------------------------------------------------------------ #
# Diversity
# ------------------------------------------------------------------------------------------------------------ #


def cluster_labels(features, clusters=DEFAULT_CLUSTERS, seed=KMEANS_SEED, restarts=KMEANS_RESTARTS):
    """k-means labels of standardised feature vectors.

    Args:
        features (ndarray): [N, F], every image of every set.
        clusters (int): k; lowered to the number of distinct vectors.
        seed (int): seed of the k-means++ initialisations (fixed: the report is deterministic).
        restarts (int): initialisations; the one with the lowest inertia wins.

    Returns:
        tuple[ndarray, int]: labels [N] in [0, k), and k.
    """
    from scipy.cluster.vq import kmeans2
    std = features.std(0)
    z = (features - features.mean(0)) / np.where(std > 0, std, 1)
    k = min(int(clusters), len(np.unique(z.round(9), axis=0)))
    if k <= 1:
        return np.zeros(len(z), int), 1
    rng, best = np.random.default_rng(seed), None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "One of the clusters is empty": kept as it is, counted as empty
        for _ in range(restarts):
            centroids, labels = kmeans2(z, k, minit='++', rng=rng)
            inertia = float(((z - centroids[labels]) ** 2).sum())
            if best is None or inertia < best[0]:
                best = (inertia, labels)
    return best[1], k


def cluster_entropy(labels, k):
    """(entropy in bits, entropy / log2 k) of the cluster histogram of ``labels``."""
    p = np.bincount(labels, minlength=k) / max(len(labels), 1)
    p = p[p > 0]
    bits = max(0., float(-(p * np.log2(p)).sum()))  # one cluster: 0, not -0
    return bits, bits / math.log2(k) if k > 1 else 0.


# ------------------------------------------------------------------------------------------------------------ #
# The report
# ------------------------------------------------------------------------------------------------------------ #


def measure_set(pair_set, samples=0):
    """ΔE00 and residual statistics of every pair of a set.

    Returns:
        dict: ``scale``, ``keys``, ``delta_e`` [N], ``features`` [N, F], ``samples`` [(key, HR↓ uint8, LQ uint8)].
    """
    from tqdm import tqdm
    scale, delta_e, features, kept = None, [], [], []
    for key in tqdm(pair_set.lq.keys, desc=pair_set.name, unit='img', disable=None):
        lq, gt = pair_set.lq.read(key), pair_set.gt.read(key)
        where = f'PAIRS_PREFIX {pair_set.prefix}, key {key!r}'
        key_scale = infer_scale(gt.shape, lq.shape, where)
        if scale is not None and key_scale != scale:
            raise ValueError(f'{where}: scale {key_scale}, but the keys before it have scale {scale}')
        if min(lq.shape[:2]) < 3:
            raise ValueError(f'{where}: LQ {lq.shape[0]}x{lq.shape[1]} is too small to measure (3x3 at least)')
        scale = key_scale
        reference = bicubic_down(gt, scale)
        delta_e.append(image_delta_e(reference, lq))
        features.append(residual_features(reference, lq))
        if len(kept) < samples:
            kept.append((key, to_uint8(reference), to_uint8(lq)))
    return {'scale': scale, 'keys': list(pair_set.lq.keys), 'delta_e': np.array(delta_e),
            'features': np.array(features), 'samples': kept}


def summarise(pair_set, measured, labels, k):
    """The report entry of one set (JSON-able)."""
    values = measured['delta_e']
    bits, normalised = cluster_entropy(labels, k)
    return {
        'name': pair_set.name, 'prefix': pair_set.prefix, 'lq': pair_set.lq.path, 'gt': pair_set.gt.path,
        'scale': measured['scale'], 'pairs': len(values),
        'delta_e': {'mean': float(values.mean()), 'median': float(np.median(values)),
                    'p90': float(np.percentile(values, 90)), 'max': float(values.max()),
                    'per_image': {key: float(v) for key, v in zip(measured['keys'], values)}},
        'diversity': {'normalised_entropy': normalised, 'entropy_bits': bits,
                      'cluster_counts': np.bincount(labels, minlength=k).tolist()},
        'residual_statistics_mean': dict(zip(FEATURES, measured['features'].mean(0).tolist())),
    }


def _number(value):
    """Three decimals, without the '-0.000' of a tiny negative float."""
    text = f'{value:.3f}'
    return '0.000' if text == '-0.000' else text


MD_ROWS = [('pairs', lambda s: f"{s['pairs']}"), ('scale', lambda s: f"x{s['scale']}"),
           ('ΔE00 mean (HR↓ vs LQ)', lambda s: _number(s['delta_e']['mean'])),
           ('ΔE00 median', lambda s: _number(s['delta_e']['median'])),
           ('ΔE00 90th percentile', lambda s: _number(s['delta_e']['p90'])),
           ('diversity (cluster entropy / log2 k, 0-1)', lambda s: _number(s['diversity']['normalised_entropy'])),
           ('diversity (bits)', lambda s: _number(s['diversity']['entropy_bits'])),
           *[(f'mean {name}', lambda s, name=name: _number(s['residual_statistics_mean'][name])) for name in FEATURES]]


def report_markdown(report):
    """``report.md``: one column per set, then how to read it."""
    sets = report['sets']
    lines = ['# Degradation report', '', '| | ' + ' | '.join(s['name'] for s in sets) + ' |',
             '| --- |' + ' --- |' * len(sets)]
    lines += [f'| {title} | ' + ' | '.join(cell(s) for s in sets) + ' |' for title, cell in MD_ROWS]
    k = report['diversity_method']['clusters']
    how_to_read = ("HR↓ is the GT downscaled by MATLAB-style bicubic at the pair's scale. ΔE00: CIEDE2000 between "
                   'HR↓ and LQ in CIELAB (sRGB, D65), per image the mean over pixels; larger means the LQ colours '
                   'drift from the HR (the paper found this hurts SR). Diversity: the entropy of each set\'s histogram '
                   f'over k = {k} k-means clusters of per-image residual statistics (LQ - HR↓), fitted to all sets of '
                   'this report together, so it ranks these sets only; 0 = one kind of degradation, 1 = spread evenly '
                   '(see gtplus_models/tools/degradation_report.py).')
    lines += ['', how_to_read, '', '![samples](samples.png)', '', '![per-image ΔE00](delta_e_hist.png)', '']
    return '\n'.join(lines)


def plot_delta_e(report, path):
    """Per-image ΔE00 histograms, one series per set, on shared bins; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 3.4))
    FigureCanvasAgg(fig)  # Agg canvas without pyplot: no global backend switch
    axis = fig.add_subplot(1, 1, 1)
    series = [(s['name'], list(s['delta_e']['per_image'].values()), s['delta_e']['mean']) for s in report['sets']]
    top = max(max(values) for _, values, _ in series)
    bins = np.linspace(0, top * 1.05 + 1e-6, 31)
    for name, values, mean in series:
        axis.hist(values, bins=bins, histtype='step', linewidth=1.5, label=f'{name} (mean {mean:.2f})')
    axis.set_xlabel('per-image mean ΔE00 (HR↓ vs LQ)')
    axis.set_ylabel('images')
    axis.legend(fontsize=8)
    fig.tight_layout()
    tmp = f'{path}.tmp.png'
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, path)
    return path


def write_sample_sheet(pair_sets, measured, path):
    """Rows of HR↓ | LQ for the first keys, the sets side by side (whole, then centre-enlarged)."""
    rows = []
    for index in range(max(len(m['samples']) for m in measured)):
        panels, first_key = [], None
        for pair_set, m in zip(pair_sets, measured):
            if index < len(m['samples']):
                key, reference, lq = m['samples'][index]
                first_key = first_key or key
                suffix = '' if key == first_key else f' [{key}]'
                panels += [(f'{pair_set.name}: HR bicubic{suffix}', reference), (f'{pair_set.name}: LQ', lq)]
        rows += preview_rows(first_key, panels)
    write_png(path, stack_rows(rows))
    return path


def degradation_report(prefixes, out_dir, samples=4, clusters=None):
    """``gtplus degradation-report``: measure every pair set, then write the report files (module docstring).

    Args:
        prefixes (list[str]): PAIRS_PREFIX of each set (``PREFIX_lq.lmdb`` + ``PREFIX_gt.lmdb``).
        out_dir (str): folder for report.json, report.md, samples.png and delta_e_hist.png (created; files of
            an earlier report there are replaced).
        samples (int): keys per set in samples.png (0: no sheet).
        clusters (int | None): k of the diversity clustering, >= 2 (None: :data:`DEFAULT_CLUSTERS`).

    Returns:
        list[str]: the files written.
    """
    clusters = DEFAULT_CLUSTERS if clusters is None else clusters
    if isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 2:
        raise ValueError(f'--clusters must be an integer >= 2, got {clusters!r}')
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(f'--samples must be an integer >= 0, got {samples!r}')
    check_output_folder(out_dir, '--out')
    pair_sets = read_pair_sets(prefixes)
    measured = [measure_set(pair_set, samples) for pair_set in pair_sets]
    labels, k = cluster_labels(np.concatenate([m['features'] for m in measured]), clusters)
    bounds = np.cumsum([0] + [len(m['delta_e']) for m in measured])
    report = {'format': REPORT_FORMAT,
              'diversity_method': {'features': list(FEATURES), 'clusters': k, 'requested_clusters': clusters,
                                   'kmeans_seed': KMEANS_SEED, 'kmeans_restarts': KMEANS_RESTARTS},
              'sets': [summarise(s, m, labels[bounds[i]:bounds[i + 1]], k)
                       for i, (s, m) in enumerate(zip(pair_sets, measured))]}
    os.makedirs(out_dir, exist_ok=True)
    written = [osp.join(out_dir, 'report.json'), osp.join(out_dir, 'report.md')]
    write_json(written[0], report)
    atomic_write(written[1], report_markdown(report))
    written.append(plot_delta_e(report, osp.join(out_dir, 'delta_e_hist.png')))
    if samples > 0:
        written.append(write_sample_sheet(pair_sets, measured, osp.join(out_dir, 'samples.png')))
    return written
