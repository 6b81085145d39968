"""Quickstart pipeline ``iqpir``: IQPIR's quality prior on an uneven GT set, swept over target scores, on a CPU.

The world: every training photo enters the GT set three times, pristine and at two lower qualities (Gaussian blur
σ 1; blur σ 2 then JPEG q40), as a real GT set mixes good and mediocre images. ``gtplus score`` rates each GT with
offline NR-IQA (NIQE and PIQE, min-max normalised and averaged: IQPIR's ensemble score), without knowing which is
which. The held-out photos are degraded by the same blind chain the training LQ is drawn from (CodeFormer's, with
the ranges of the stage-2 template), and every output is judged against the pristine photo and by NIQE/PIQE.

Stages (each skipped when its output exists, so a rerun resumes; templates in ``quickstart/templates/iqpir/``):
1. data: the uneven GT LMDB and its score side file (and histogram), the held-out pristine photos and their LQ;
2. stage1: the dual-codebook VQ autoencoder (HQ+ codebook from GT scored above ``hq_threshold`` only);
3. stage2: the quality-conditioned transformer (IQPIRModel: CE + feature loss, NIQE quality loss from
   ``quality_start_iter``) and, at the same budget, the control: the same network without the score embedding
   and without the quality loss (CodeFormer's stage II);
4. restore the held-out LQ with ``gtplus restore``'s engine at each target score of TARGETS (the control once);
5. report: PSNR/SSIM to the pristine photo, NIQE and PIQE per target, the Spearman correlation between the target
   score and the measured quality, the method against the control; figures (the sweep strips, a comparison).
"""
import os
import os.path as osp

import numpy as np

from gtplus_data.degradations import degrade, key_seed
from gtplus_data.figures import labelled_strip, stack_rows
from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import to_uint8, write_png
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.quickstart.common import (
    MIN_PHOTO_SIZE,
    StageTimer,
    fill_template,
    latest_weights,
    load_photos,
    split_photos,
    train_stage,
    write_lmdb,
    write_originals,
)
from gtplus_models.quickstart.report import evaluate_images, summarise, write_report

NAME = 'iqpir'
TEMPLATES = 'iqpir'  # quickstart/templates/<TEMPLATES>/
HELP = ('IQPIR: NR-IQA scores of an uneven GT set condition a dual-codebook transformer; a target-score sweep on '
        'held-out photos against the same transformer without the score (about 5 minutes on 2 CPU cores)')
PHOTO_SIZE = 192
TEST_PHOTOS = ('chelsea', 'stereo_motorcycle')
# The uneven GT set: quality name -> gtplus_data.degradations.degrade arguments (None: the pristine photo).
GT_QUALITIES = {'q2': None, 'q1': {'blur_sigma': 1.0}, 'q0': {'blur_sigma': 2.0, 'jpeg_quality': 40}}
SCORE_METRICS = ('niqe', 'piqe')
TARGETS = (0.1, 0.3, 0.5, 0.7, 0.9)
TEST_SEED = 0  # the held-out LQ of photo k is drawn under key_seed(TEST_SEED, k)
CONTROL = 'stage2_control'  # the template of the control: stage2.yml without the score embedding and quality loss
CONTROL_TARGET = 1.0  # the control ignores the score; its outputs are written under this one


def data_path(out, name):
    return osp.join(out, 'data', name)


def check_size(size):
    """--size: the stage templates train on 96x96 crops and NIQE scores 96x96 blocks."""
    if size < MIN_PHOTO_SIZE or size % 8:
        raise ValueError(f'--size must be a multiple of 8 and at least {MIN_PHOTO_SIZE} for the iqpir pipeline, '
                         f'got {size}')


def uneven_gt(photos):
    """{photo: pristine} -> {'<photo>_<quality>': image} for every quality of GT_QUALITIES (the blur and JPEG are
    deterministic; no seed involved)."""
    return {f'{key}_{quality}': img if params is None else degrade(img, **params)
            for key, img in photos.items() for quality, params in GT_QUALITIES.items()}


def heldout_degradation(out):
    """The blind-degradation parameters of the stage-2 template's training set (the held-out LQ uses the same)."""
    import yaml

    from gtplus_data.scored_blind_dataset import blind_params
    with open(fill_template(out, TEMPLATES, 'stage2')) as f:
        return blind_params(yaml.safe_load(f)['datasets']['train'])


def heldout_lq(photos, params):
    """{key: pristine} -> {key: blindly degraded}, each drawn under its own seed (same images on every run)."""
    from gtplus_data.scored_blind_dataset import blind_degrade, seeded_global_rngs
    lq = {}
    for key, img in photos.items():
        with seeded_global_rngs(key_seed(TEST_SEED, key)):
            lq[key] = blind_degrade(img, params)
    return lq


def prepare_data(out, splits, photos=None):
    """Stage 1: data/train_gt.lmdb (+ its quality_scores.json and histogram), data/test_pristine.lmdb and
    data/test_lq.lmdb."""
    from gtplus_models.tools.scoring import score_dataset
    write_originals(out, photos)
    gt_path = write_lmdb(data_path(out, 'train_gt.lmdb'), uneven_gt(splits['train']))
    if not osp.isfile(osp.join(gt_path, 'quality_scores.json')):
        score_dataset(gt_path, list(SCORE_METRICS), ensemble=True, plot=osp.join(out, 'figures', 'gt_scores.png'),
                      progress=False)
    write_lmdb(data_path(out, 'test_pristine.lmdb'), splits['test'])
    if not is_complete(data_path(out, 'test_lq.lmdb')):
        write_lmdb(data_path(out, 'test_lq.lmdb'), heldout_lq(splits['test'], heldout_degradation(out)))


def gt_score_table(out):
    """The GT set's scores by quality: {quality: {'ensemble': mean, 'niqe': mean, 'piqe': mean, 'above S_thr': n}}
    (how well the NR-IQA ensemble finds the uneven qualities it was not told about)."""
    import yaml

    from gtplus_data.side_file import read_side_payload
    records = read_side_payload(osp.join(data_path(out, 'train_gt.lmdb'), 'quality_scores.json'))['records']
    with open(fill_template(out, TEMPLATES, 'stage1')) as f:
        threshold = yaml.safe_load(f)['network_g']['hq_threshold']
    rows = {}
    for quality, params in GT_QUALITIES.items():
        scores = [r for key, r in records.items() if key.endswith(f'_{quality}')]
        label = 'pristine' if params is None else ', '.join(f'{k} {v}' for k, v in params.items())
        row = {name: float(np.mean([r[name] for r in scores])) for name in ('ensemble', *SCORE_METRICS)}
        row['above_threshold'] = f'{sum(r["ensemble"] > threshold for r in scores)} of {len(scores)}'
        rows[f'{quality} ({label})'] = row
    return rows, threshold


def restored_folder(out, name, target):
    """Where the restore engine writes source ``name``'s outputs at ``target`` ('method' or 'control')."""
    from gtplus_models.tools.restore import score_folder
    return osp.join(out, 'restored', name, score_folder(target))


def restore_test(out):
    """Stage 4: the held-out LQ through the method at every target of TARGETS (one folder each, plus the engine's
    sweep strips) and through the control (its network has no score embedding: the score is ignored)."""
    from gtplus_models.tools.restore import restore
    lq = data_path(out, 'test_lq.lmdb')
    for name, stage, scores in (('method', 'stage2', TARGETS), ('control', CONTROL, (CONTROL_TARGET, ))):
        restore(lq, osp.join(out, 'restored', name), fill_template(out, TEMPLATES, stage), latest_weights(out, stage),
                scores=scores)


def spearman(x, y):
    """Spearman's rank correlation of two equal-length sequences (scipy's, ties averaged); None when either is
    constant (no ranking to correlate: e.g. outputs that do not change with the target)."""
    from scipy.stats import spearmanr
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def signed(value):
    return 'undefined (constant)' if value is None else f'{value:+.2f}'


def source_name(target):
    return f'target_{target:g}'


def evaluate(out, test_keys):
    """The report: the LQ, every target's outputs and the control's against the pristine photos (PSNR, SSIM) and
    by NIQE/PIQE, and the Spearman correlations between the target score and the measured quality over TARGETS.

    Returns:
        dict: :func:`gtplus_models.quickstart.report.summarise`'s report plus ``sweep`` (target -> mean metrics),
        ``spearman`` (metric -> rho, the measured quality signed so that larger is better), ``gt_scores`` and a
        plain ``summary``.
    """
    from gtplus_models.quickstart.report import better
    sources = {'lq': ImageSource(data_path(out, 'test_lq.lmdb')),
               **{source_name(t): ImageSource(restored_folder(out, 'method', t)) for t in TARGETS},
               'control': ImageSource(restored_folder(out, 'control', CONTROL_TARGET))}
    labels = {'lq': 'degraded input (LQ)',
              **{source_name(t): f'IQPIR at target score {t:g}' for t in TARGETS},
              'control': 'control: no score embedding, no quality loss'}
    top, bottom = source_name(TARGETS[-1]), source_name(TARGETS[0])
    references = {'pristine': ImageSource(data_path(out, 'test_pristine.lmdb'))}
    report = summarise(evaluate_images(sources, references), test_keys, labels, ((top, 'control'), (top, bottom)))
    means = report['mean']
    sweep = {f'{t:g}': means[source_name(t)] for t in TARGETS}
    rho = {}
    for metric, spec in report['metrics'].items():
        sign = 1. if spec['direction'].startswith('higher') else -1.
        rho[metric] = spearman(list(TARGETS), [sign * sweep[f'{t:g}'][metric] for t in TARGETS])
    gt_rows, threshold = gt_score_table(out)
    report.update(sweep=sweep, spearman=rho, gt_scores=gt_rows, hq_threshold=threshold)
    report['tables'] = [
        {'title': 'Target-score sweep on the held-out photos (mean over photos)', 'column': 'target score',
         'rows': sweep},
        {'title': 'Spearman correlation between the target score and the measured quality over the sweep '
                  '(signed so that +1 means a higher target always measured better)', 'column': 'metric',
         'headers': {'rho': 'Spearman ρ'}, 'rows': {m: {'rho': r} for m, r in rho.items()}},
        {'title': f'The uneven GT set as the NR-IQA ensemble scored it (S_thr = {threshold})', 'column': 'GT quality',
         'headers': {'ensemble': 'ensemble score (↑)', 'niqe': 'NIQE (↓)', 'piqe': 'PIQE (↓)',
                     'above_threshold': 'above S_thr'}, 'rows': gt_rows},
    ]
    wins = [m for m in report['metrics'] if better(m, means[top][m], means['control'][m])]
    beats_input = [m for m in report['metrics'] if better(m, means[top][m], means['lq'][m])]
    follows = rho['niqe'] is not None and rho['niqe'] > 0
    report['summary'] = (
        f'Spearman ρ between the target score and NIQE-measured quality over {len(TARGETS)} targets: '
        f'{signed(rho["niqe"])} (a higher target {"gave" if follows else "did not give"} better NIQE); PIQE '
        f'{signed(rho["piqe"])}, PSNR to the pristine photo {signed(rho["psnr_vs_pristine"])}. At target '
        f'{TARGETS[-1]:g} IQPIR beat the control (the same network and budget without the score embedding and the '
        f'quality loss) on {len(wins)} of {len(report["metrics"])} metrics ({", ".join(wins) or "none"}) and the '
        f'degraded input itself on {len(beats_input)} ({", ".join(beats_input) or "none"}). '
        + ('The method did not help here. ' if not wins else '')
        + ('The restorations are worse than their input on every metric: a VQ prior trained for minutes on six '
           'photos cannot yet reconstruct an unseen photo; the sweep shows the conditioning, not a usable restorer. '
           if not beats_input else '')
        + f'{len(test_keys)} held-out photos and minutes of CPU training: treat differences as indicative only.')
    return report


def sweep_figure(out, test_keys, path):
    """Per held-out photo: the LQ, the method at every target, the control and the pristine photo."""
    rows = []
    for key in test_keys:
        panels = [(f'LQ [{key}]', to_uint8(ImageSource(data_path(out, 'test_lq.lmdb')).read(key)))]
        panels += [(f'score {t:g}', to_uint8(ImageSource(restored_folder(out, 'method', t)).read(key)))
                   for t in TARGETS]
        panels += [('control', to_uint8(ImageSource(restored_folder(out, 'control', CONTROL_TARGET)).read(key))),
                   ('pristine', to_uint8(ImageSource(data_path(out, 'test_pristine.lmdb')).read(key)))]
        rows.append(labelled_strip(panels))
    write_png(path, stack_rows(rows))
    return path


def run(out, size=PHOTO_SIZE, iters=None, cond=None, photos=None, holdout=None):
    """All stages; returns the report dict (also written to OUT/report.json and OUT/report.md).

    Args:
        out (str): output folder.
        size (int): side of the square photos (a multiple of 8, >= 128).
        iters (int | None): override every training stage's iterations (a quick preview; None: the templates').
        cond: unused (the enhanced-supervision pipeline's c); accepted so that ``--pipeline all`` passes it.
        photos (str | None): a folder of the user's photographs instead of the embedded ones.
        holdout (list[str] | None): photo names held out for the report.
    """
    check_size(size)
    train, test = split_photos(load_photos(size, photos), holdout, TEST_PHOTOS)
    out = osp.abspath(out)
    os.makedirs(out, exist_ok=True)
    timed = StageTimer()
    timed('data', prepare_data, out, {'train': train, 'test': test}, photos)
    timed('train_stage1', train_stage, out, TEMPLATES, 'stage1', iters)
    quality_start = [f'train:quality_start_iter={max(1, iters // 2)}'] if iters else []
    timed('train_stage2', train_stage, out, TEMPLATES, 'stage2', iters, quality_start)
    timed('train_control', train_stage, out, TEMPLATES, CONTROL, iters)
    timed('restore', restore_test, out)
    test_keys = tuple(sorted(test))
    report = timed('report', evaluate, out, test_keys)
    timed('figures', sweep_figure, out, test_keys, osp.join(out, 'figures', 'sweep.png'))
    report['timings_s'] = timed.report()
    write_report(out, report, 'gtplus quickstart report: IQPIR target-score sweep')
    return report
