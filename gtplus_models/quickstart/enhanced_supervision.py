"""Quickstart pipeline ``enhanced-supervision``: the whole method on the embedded photos, on a CPU.

The task (imperfect GT). From each pristine photo P (resized so its short side is 256, centre-cropped to 256²):
- GT = P blurred with σ = 1.3 and JPEG-compressed at quality 90: a mildly degraded "ground truth", like the
  slightly soft, compressed GT of real datasets;
- LQ = P blurred with σ = 2.0, plus Gaussian noise σ = 8/255, JPEG at quality 50: the restorer's input.
Six photos train; chelsea and rocket are held out (``--photos DIR [--holdout NAME,...]`` runs the same on a user's
own photographs, held out by photo). Because the pristine photo is known, the report can say whether
the enhanced supervision moves outputs towards the pristine image and not only away from the GT.

Stages (each skipped when its output exists, so a rerun resumes; templates in
``quickstart/templates/enhanced_supervision/``):
1. data: sample photos -> pristine / GT / LQ LMDBs;
2. restorer: a small GTPlusNAFNet, LQ -> GT (``gtplus train``);
3. enhancer: a small GTPlusNAFNet trained on pairs made from the training photos' pristine versions only
   (``gtplus make-enhancer-pairs``'s engine: Gaussian blur, x1-x3 bicubic down-up, noise and JPEG, drawn per
   pair), so that it deblurs and not only upsamples: the offline stand-in for OSEDiff (see the enhancer template);
4. the stand-in's variants of the GT at x1 (the GT itself), x2 and x3 (``gtplus super-resolve-gt``'s engine; a
   xs variant runs the enhancer at s times the GT's size), shown in figures/sr_variants.png, and
   training-free detail variants (USM, Wiener, Richardson-Lucy; ``--detail-sweep``): together the CFMG's sources;
5. CFMG with offline NIQE as the quality judge; 6. enhanced GT of the held-out photos at c (``enhance-gt``'s engine);
7. ORNet ('light' preset) GT -> Î(c); 8. refine: restorer + ORNet on the held-out LQ, and a c-sweep;
9. report.json / report.md and figures.
"""
import os
import os.path as osp

from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import to_uint8, write_png
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.enhanced_supervision import DEFAULT_COND
from gtplus_models.quickstart.common import (MIN_PHOTO_SIZE, StageTimer, load_photos, load_stage_network, split_photos,
                                             train_stage, write_lmdb, write_originals)
from gtplus_models.quickstart.report import (ArraySource, evaluate_images, improved_metrics, mean_table, summarise,
                                             write_report)
from gtplus_models.tools.enhance_gt import enhanced_sweep, mask_panels, read_sources, source_names, write_enhanced_gt
from gtplus_models.tools.enhancer_pairs import write_enhancer_pairs
from gtplus_data.figures import labelled_strip, stack_rows, write_sources_preview
from gtplus_models.tools.refine import cond_folder, refine_source
from gtplus_models.tools.super_resolve import (arch_enhancer, detail_options, super_resolve_gt, variant_path,
                                               write_variants)

NAME = 'enhanced-supervision'
TEMPLATES = 'enhanced_supervision'  # quickstart/templates/<TEMPLATES>/
HELP = 'CFMG + ORNet on an imperfect GT (about 5-8 minutes on 2 CPU cores)'
TEST_PHOTOS = ('chelsea', 'rocket')
PHOTO_SIZE = 256
GT_DEGRADATION = dict(blur_sigma=1.3, noise_sigma=0., jpeg_quality=90)
LQ_DEGRADATION = dict(blur_sigma=2.0, noise_sigma=8., jpeg_quality=50)
# The learned stand-in: its training pairs (``write_enhancer_pairs`` ranges: blur σ in GT pixels, noise σ on
# 0-255, JPEG quality) and the scales of its variants. A stand-in trained on plain bicubic down-up pairs stayed
# 55-60 dB from the GT (it undid its own upsampling and nothing else); with blur in its inputs it deblurs.
ENHANCER_PAIRS = dict(scales=(1, 2, 3), blur=(0.5, 2.5), noise=(0., 3.), jpeg=(75, 95))
ENHANCER_SCALES = (1, 2, 3)
# Training-free detail variants at the GT's own blur (σ 1.3), CFMG sources next to the stand-in's variants.
DETAIL_SWEEP = ('usm', 'wiener:1.3', 'rl:1.3')
# The CFMG's source sets compared by benchmarks/bench_enhanced_supervision.py: the stand-in's variants, the detail
# variants, or both. SOURCE_SET is the one the cfmg/ornet templates train on, picked from that benchmark (README,
# "Where the gain comes from"); the benchmark reuses the quickstart's own CFMG and ORNet for it.
SOURCE_SETS = ('standin', 'detail', 'both')
SOURCE_SET = 'both'
SWEEP_CONDS = (0.0, 0.3, 0.6, 1.0)
SOURCE_LABELS = {'gt': 'GT', 'enhanced_gt': 'enhanced GT', 'restorer': 'restorer output',
                 'restorer_ornet': 'restorer + ORNet'}
COMPARISONS = (('restorer_ornet', 'restorer'), ('enhanced_gt', 'gt'))


def load_splits(size=PHOTO_SIZE, photos=None, holdout=None):
    """{'train': {key: pristine image}, 'test': {...}} (embedded photos, or ``photos``, a user's folder); checked
    before anything is written."""
    train, test = split_photos(load_photos(size, photos), holdout, TEST_PHOTOS)
    return {'train': train, 'test': test}


def prepare_data(out, splits, photos=None):
    """Stage 1: the pristine / GT / LQ LMDBs of each split and the enhancer's training pairs. Returns ``splits``."""
    from gtplus_data.degradations import degrade
    write_originals(out, photos)
    data = osp.join(out, 'data')
    for split, images in splits.items():
        write_lmdb(osp.join(data, f'{split}_pristine.lmdb'), images)
        write_lmdb(osp.join(data, f'{split}_gt.lmdb'),
                   {k: degrade(v, **GT_DEGRADATION, seed=i) for i, (k, v) in enumerate(sorted(images.items()))})
        write_lmdb(osp.join(data, f'{split}_lq.lmdb'),
                   {k: degrade(v, **LQ_DEGRADATION, seed=100 + i) for i, (k, v) in enumerate(sorted(images.items()))})
    if not all(is_complete(osp.join(data, f'enhancer_{part}.lmdb')) for part in ('lq', 'gt')):
        write_enhancer_pairs(osp.join(data, 'train_pristine.lmdb'), osp.join(data, 'enhancer'), preview=0,
                             **ENHANCER_PAIRS)
    return splits


def variant_roots(out, split):
    """The learned stand-in's variants (ENHANCER_SCALES) of a split's GT."""
    return [variant_path(osp.join(out, 'data', f'{split}_sr'), s) for s in ENHANCER_SCALES]


def detail_roots(out, split):
    """The training-free detail variants (DETAIL_SWEEP) of a split's GT."""
    return [osp.join(out, 'data', f'{split}_detail', f'{detail_options(spec)[0]}.lmdb') for spec in DETAIL_SWEEP]


def set_roots(out, split, name):
    """The variant LMDBs of source set ``name`` (one of SOURCE_SETS) of a split's GT."""
    if name not in SOURCE_SETS:
        raise ValueError(f'unknown source set {name!r}; choose from {", ".join(SOURCE_SETS)}')
    standin = variant_roots(out, split) if name in ('standin', 'both') else []
    return standin + (detail_roots(out, split) if name in ('detail', 'both') else [])


def source_roots(out, split):
    """The CFMG's sources besides the GT (SOURCE_SET; the cfmg/ornet templates list the same for 'train')."""
    return set_roots(out, split, SOURCE_SET)


def make_detail_variants(out):
    """Stage 4b: the training-free detail variants of the train and test GT (``super-resolve-gt --detail-sweep``)."""
    for split in ('train', 'test'):
        if not all(is_complete(path) for path in detail_roots(out, split)):
            super_resolve_gt(osp.join(out, 'data', f'{split}_gt.lmdb'), osp.join(out, 'data', f'{split}_detail'),
                             detail_sweep=list(DETAIL_SWEEP), preview=0)


def enhanced_gt_path(out, cond):
    return osp.join(out, 'data', f'test_enhanced_gt_c{cond:.2f}.lmdb')


def make_variants(out):
    """Stage 4: the stand-in's variants (ENHANCER_SCALES) of the train and test GT."""
    enhancer = arch_enhancer(load_stage_network(out, TEMPLATES, 'enhancer'))
    for split in ('train', 'test'):
        if all(is_complete(path) for path in variant_roots(out, split)):
            continue
        write_variants(osp.join(out, 'data', f'{split}_gt.lmdb'), osp.join(out, 'data', f'{split}_sr'),
                       ENHANCER_SCALES, enhancer, colour_align='wavelet')


def make_enhanced_gt(out, cond):
    """Stage 6: Î(c) of the held-out GT, written as an LMDB (``gtplus enhance-gt``'s engine)."""
    target = enhanced_gt_path(out, cond)
    if not is_complete(target):
        write_enhanced_gt(load_stage_network(out, TEMPLATES, 'cfmg'), osp.join(out, 'data', 'test_gt.lmdb'),
                          source_roots(out, 'test'), target, cond)


def refine_test_photos(out, cond):
    """Stage 8: restorer, then restorer + ORNet at c and at the sweep values, on the held-out LQ."""
    restorer = load_stage_network(out, TEMPLATES, 'restorer')
    ornet = load_stage_network(out, TEMPLATES, 'ornet')
    conds = sorted(set(SWEEP_CONDS) | {cond})
    refine_dir = osp.join(out, 'refine')
    refine_source(ImageSource(osp.join(out, 'data', 'test_lq.lmdb')), refine_dir, restorer, ornet, conds)
    return refine_dir


def evaluate(out, refine_dir, cond, test_keys=TEST_PHOTOS):
    """PSNR/SSIM vs GT and vs pristine, NIQE and PIQE, for GT, enhanced GT, restorer and restorer + ORNet."""
    data = osp.join(out, 'data')
    sources = {
        'gt': ImageSource(osp.join(data, 'test_gt.lmdb')),
        'enhanced_gt': ImageSource(enhanced_gt_path(out, cond)),
        'restorer': ImageSource(osp.join(refine_dir, 'restored')),
        'restorer_ornet': ImageSource(osp.join(refine_dir, cond_folder(cond))),
    }
    references = {'gt': ImageSource(osp.join(data, 'test_gt.lmdb')),
                  'pristine': ImageSource(osp.join(data, 'test_pristine.lmdb'))}
    report = dict(cond=cond, **summarise(evaluate_images(sources, references), test_keys, SOURCE_LABELS,
                                         COMPARISONS))
    report['enhanced_gt_by_c'] = enhanced_gt_by_c(out, references)
    report['tables'] = [{'title': 'Enhanced GT Î(c) of the held-out photos at each c (mean)', 'column': 'c',
                         'rows': report['enhanced_gt_by_c']}]
    gain = improved_metrics(report['mean'], 'restorer_ornet', 'restorer')
    metrics = report['metrics']
    report['summary'] = (f'ORNet (c={cond}) after the restorer improved {len(gain)} of {len(metrics)} metrics '
                         f'({", ".join(gain) or "none"}) on {len(test_keys)} held-out photos; see verdicts for '
                         f'the others. {len(test_keys)} photos and minutes of CPU training: treat differences as '
                         'indicative only.')
    return report


def enhanced_gt_by_c(out, references):
    """Mean metrics of the held-out photos' Î(c) at each c of SWEEP_CONDS: what the c knob does to the target.

    Returns:
        dict[str, dict]: 'c=<c>' -> {metric: mean}.
    """
    cfmg = load_stage_network(out, TEMPLATES, 'cfmg')
    images = enhanced_sweep(cfmg, references['gt'], [ImageSource(p) for p in source_roots(out, 'test')], SWEEP_CONDS)
    per_image = evaluate_images({f'c={value:g}': ArraySource(imgs) for value, imgs in images.items()}, references)
    return mean_table(per_image)


def make_figures(out, refine_dir, cond):
    """OUT/figures/: comparison.png, masks.png, sr_variants.png, detail_variants.png, c_sweep.png and
    enhanced_gt_sweep.png."""
    cfmg = load_stage_network(out, TEMPLATES, 'cfmg')
    variant_paths = source_roots(out, 'test')
    data = osp.join(out, 'data')
    figures = osp.join(out, 'figures')
    os.makedirs(figures, exist_ok=True)
    panels = {
        'LQ': ImageSource(osp.join(data, 'test_lq.lmdb')),
        'restorer': ImageSource(osp.join(refine_dir, 'restored')),
        f'+ORNet c={cond:g}': ImageSource(osp.join(refine_dir, cond_folder(cond))),
        'GT': ImageSource(osp.join(data, 'test_gt.lmdb')),
        f'enhanced GT c={cond:g}': ImageSource(enhanced_gt_path(out, cond)),
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
    detail_paths = detail_roots(out, 'test')
    write_sources_preview([('GT', gt_source)] + [(name, ImageSource(path)) for name, path in
                                                 zip(source_names(detail_paths)[1:], detail_paths)],
                          osp.join(figures, 'detail_variants.png'), num_keys=len(keys))
    sr_paths = variant_roots(out, 'test')
    write_sources_preview([('GT', gt_source)] + [(name, ImageSource(path)) for name, path in
                                                 zip(source_names(sr_paths)[1:], sr_paths)],
                          osp.join(figures, 'sr_variants.png'), num_keys=len(keys))

    sweep = ImageSource(osp.join(refine_dir, 'sweep'))
    write_png(osp.join(figures, 'c_sweep.png'), stack_rows([to_uint8(sweep.read(k)) for k in keys]))

    sweep_images = enhanced_sweep(cfmg, gt_source, variant_sources, SWEEP_CONDS)
    enhanced_rows = [labelled_strip([(f'GT [{key}]', to_uint8(gt_source.read(key)))] +
                                    [(f'enhanced GT c={value:g}', to_uint8(sweep_images[value][key]))
                                     for value in SWEEP_CONDS]) for key in keys]
    write_png(osp.join(figures, 'enhanced_gt_sweep.png'), stack_rows(enhanced_rows))


def run(out, size=PHOTO_SIZE, iters=None, cond=DEFAULT_COND, photos=None, holdout=None):
    """All stages; returns the report dict (also written to OUT/report.json and OUT/report.md).

    Args:
        out (str): output folder.
        size (int): side of the square photos (>= 128: the CFMG and ORNet train on 128² crops).
        iters (int | None): override every stage's iterations (a quick preview; None: the templates' values).
        cond (float): c of the report and the enhanced GT.
        photos (str | None): a folder of the user's photographs instead of the embedded ones.
        holdout (list[str] | None): photo names held out for the report (default: chelsea and rocket for the
            embedded photos, every fourth photo by name for ``photos``).
    """
    if size < MIN_PHOTO_SIZE:
        raise ValueError(f'--size must be at least {MIN_PHOTO_SIZE} (training crops are 128²), got {size}')
    if not 0 <= cond <= 1:
        raise ValueError(f'--cond must be in [0,1], got {cond}')
    splits = load_splits(size, photos, holdout)
    out = osp.abspath(out)
    os.makedirs(out, exist_ok=True)
    timed = StageTimer()
    timed('data', prepare_data, out, splits, photos)
    test_keys = tuple(sorted(splits['test']))
    # A preview's restorer validates once, at its last iteration (the template validates every few hundred).
    timed('train_restorer', train_stage, out, TEMPLATES, 'restorer', iters,
          [f'val:val_freq={iters}'] if iters else [])
    timed('train_enhancer', train_stage, out, TEMPLATES, 'enhancer', iters)
    timed('super_resolve_gt', make_variants, out)
    timed('detail_variants', make_detail_variants, out)
    timed('train_cfmg', train_stage, out, TEMPLATES, 'cfmg', iters)
    timed('enhance_gt', make_enhanced_gt, out, cond)
    timed('train_ornet', train_stage, out, TEMPLATES, 'ornet', iters)
    refine_dir = timed('refine', refine_test_photos, out, cond)
    report = timed('report', evaluate, out, refine_dir, cond, test_keys)
    report['timings_s'] = timed.report()
    report['settings'] = {'photo_size': size, 'iterations': iters or f'as in quickstart/templates/{TEMPLATES}/*.yml',
                          'gt_degradation': GT_DEGRADATION, 'lq_degradation': LQ_DEGRADATION,
                          'photos': photos or 'embedded (skimage.data)', 'test_photos': list(test_keys)}
    write_report(out, report, f'gtplus quickstart report (c = {cond})')
    timed('figures', make_figures, out, refine_dir, cond)
    return report
