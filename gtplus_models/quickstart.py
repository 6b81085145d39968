"""``gtplus quickstart OUT_DIR``: the whole enhanced-supervision pipeline on the embedded photos, on a CPU.

The task (imperfect GT). From each pristine photo P (resized so its short side is 256, centre-cropped to 256²):
- GT = P blurred with σ = 1.3 and JPEG-compressed at quality 90: a mildly degraded "ground truth", like the
  slightly soft, compressed GT of real datasets;
- LQ = P blurred with σ = 2.0, plus Gaussian noise σ = 8/255, JPEG at quality 50: the restorer's input.
Six photos train; chelsea and rocket are held out. Because the pristine photo is known, the report can say whether
the enhanced supervision moves outputs towards the pristine image and not only away from the GT.

Stages (each skipped when its output exists, so a rerun resumes):
1. data: sample photos -> pristine / GT / LQ LMDBs;
2. restorer: a small GTPlusNAFNet, LQ -> GT (``gtplus train``);
3. enhancer: a small GTPlusNAFNet that undoes x2-x4 bicubic down-up sampling, trained on the training photos'
   pristine versions only: the offline stand-in for OSEDiff (see options/quickstart/enhancer.yml);
4. SR variants of the GT at x2/x3/x4 (``gtplus super-resolve-gt`` logic);
5. CFMG with offline NIQE as the quality judge; 6. enhanced GT of the held-out photos at c (``enhance-gt``);
7. ORNet ('light' preset) GT -> Î(c); 8. refine: restorer + ORNet on the held-out LQ, and a c-sweep;
9. report.json / report.md and figures.
"""
import json
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np
import torch

TEST_PHOTOS = ('chelsea', 'rocket')
PHOTO_SIZE = 256
GT_DEGRADATION = dict(blur_sigma=1.3, noise_sigma=0., jpeg_quality=90)
LQ_DEGRADATION = dict(blur_sigma=2.0, noise_sigma=8., jpeg_quality=50)
ENHANCER_SCALES = (2, 3, 4)
REPORT_COND = 0.3
SWEEP_CONDS = (0.0, 0.3, 0.6, 1.0)
TEMPLATES = osp.join(osp.dirname(osp.abspath(__file__)), 'options', 'quickstart')


def logger():
    from basicsr.utils import get_root_logger
    return get_root_logger()


def square_photo(img, size):
    """HxWx3 uint8 -> size x size float32 [0,1]: area-resize the short side to ``size``, centre-crop."""
    import cv2
    height, width = img.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(img, (max(size, round(width * scale)), max(size, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return resized[top:top + size, left:left + size].astype(np.float32) / 255.


def write_lmdb(path, images):
    """{key: HxWx3 float RGB} -> a complete LMDB at ``path`` through the one writer (skipped if complete)."""
    from gtplus_data.lmdb_writer import LmdbWriter, is_complete
    if is_complete(path):
        return path
    with LmdbWriter(path) as writer:
        for key in sorted(images):
            writer.put_image(key, images[key])
        writer.finalize()
    return path


def down_up(img, scale):
    """Bicubic down by ``scale`` then back up: the blur an x``scale`` SR model learns to undo."""
    from gtplus_data.degradations import resize
    height, width = img.shape[:2]
    return resize(resize(img, height // scale, width // scale), height, width)


def prepare_data(out, size=PHOTO_SIZE):
    """Stage 1. Returns {split: {key: pristine image}}."""
    from gtplus_data.degradations import degrade
    from gtplus_data.sample_photos import load_sample_photo, sample_photo_names, write_sample_photos
    write_sample_photos(osp.join(out, 'photos'))
    pristine = {name: square_photo(load_sample_photo(name), size) for name in sample_photo_names()}
    splits = {'train': {k: v for k, v in pristine.items() if k not in TEST_PHOTOS},
              'test': {k: v for k, v in pristine.items() if k in TEST_PHOTOS}}
    data = osp.join(out, 'data')
    for split, photos in splits.items():
        write_lmdb(osp.join(data, f'{split}_pristine.lmdb'), photos)
        write_lmdb(osp.join(data, f'{split}_gt.lmdb'),
                   {k: degrade(v, **GT_DEGRADATION, seed=i) for i, (k, v) in enumerate(sorted(photos.items()))})
        write_lmdb(osp.join(data, f'{split}_lq.lmdb'),
                   {k: degrade(v, **LQ_DEGRADATION, seed=100 + i) for i, (k, v) in enumerate(sorted(photos.items()))})
    pairs = {f'{k}_x{s}': (down_up(v, s), v) for k, v in splits['train'].items() for s in ENHANCER_SCALES}
    write_lmdb(osp.join(data, 'enhancer_lq.lmdb'), {k: v[0] for k, v in pairs.items()})
    write_lmdb(osp.join(data, 'enhancer_gt.lmdb'), {k: v[1] for k, v in pairs.items()})
    return splits


def fill_template(out, name):
    """options/quickstart/<name>.yml with ${OUT} replaced, written to OUT/options/<name>.yml."""
    with open(osp.join(TEMPLATES, f'{name}.yml')) as f:
        text = f.read().replace('${OUT}', osp.abspath(out))
    path = osp.join(out, 'options', f'{name}.yml')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def latest_weights(out, name):
    return osp.join(out, 'experiments', f'quickstart_{name}', 'models', 'net_g_latest.pth')


def iteration_overrides(iters):
    """``--force_yml`` KEY=VALUE entries that shorten a training stage to ``iters`` iterations (a quick preview)."""
    if not iters:
        return []
    return [f'train:total_iter={iters}', f'logger:save_checkpoint_freq={iters}',
            f'logger:print_freq={max(1, iters // 4)}', f'train:scheduler:periods=[{iters}]']


def train_command(opt_file, overrides=()):
    """``python -m gtplus_models.train -opt FILE --auto_resume [--force_yml ...]`` as an argument list."""
    cmd = [sys.executable, '-m', 'gtplus_models.train', '-opt', opt_file, '--auto_resume']
    return cmd + ['--force_yml', *overrides] if overrides else cmd


def train_stage(out, name, iters=None):
    """Run ``gtplus train --auto_resume`` on a filled template in OUT (skipped when finished)."""
    weights = latest_weights(out, name)
    if osp.isfile(weights):
        return weights
    opt_file = fill_template(out, name)
    logger().info(f'quickstart: training {name} ({opt_file})')
    overrides = iteration_overrides(iters)
    if iters and name == 'restorer':
        overrides.append(f'val:val_freq={iters}')
    cmd = train_command(opt_file, overrides)
    proc = subprocess.run(cmd, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'quickstart stage {name} failed:\n{proc.stderr[-3000:]}')
    return weights


def network_opt(out, name, key='network_g'):
    import yaml
    with open(fill_template(out, name)) as f:
        return yaml.safe_load(f)[key]


def run_quickstart(out, cond=REPORT_COND, size=PHOTO_SIZE, iters=None):
    """All stages; returns the report dict (also written to OUT/report.json).

    Args:
        out (str): output folder.
        cond (float): c of the report and the enhanced GT.
        size (int): side of the square photos (>= 128: the CFMG and ORNet train on 128² crops).
        iters (int | None): override every stage's iterations (a quick preview; None: the templates' values).
    """
    if size < 128:
        raise ValueError(f'--size must be at least 128 (training crops are 128²), got {size}')
    start = time.time()
    out = osp.abspath(out)
    os.makedirs(out, exist_ok=True)
    timings = {}

    def timed(stage, fn, *args):
        t0 = time.time()
        result = fn(*args)
        timings[stage] = round(time.time() - t0, 1)
        logger().info(f'quickstart: {stage} done in {timings[stage]} s')
        return result

    timed('data', prepare_data, out, size)
    timed('train_restorer', train_stage, out, 'restorer', iters)
    timed('train_enhancer', train_stage, out, 'enhancer', iters)
    timed('super_resolve_gt', make_variants, out)
    timed('train_cfmg', train_stage, out, 'cfmg', iters)
    timed('enhance_gt', make_enhanced_gt, out, cond)
    timed('train_ornet', train_stage, out, 'ornet', iters)
    outputs = timed('refine', refine_test_photos, out, cond)
    report = timed('report', evaluate, out, outputs, cond)
    report['timings_s'] = dict(timings, total=round(time.time() - start, 1))
    report['settings'] = {'photo_size': size, 'iterations': iters or 'as in options/quickstart/*.yml',
                          'gt_degradation': GT_DEGRADATION, 'lq_degradation': LQ_DEGRADATION,
                          'test_photos': list(TEST_PHOTOS)}
    write_report(out, report)
    timed('figures', make_figures, out, outputs, cond)
    return report


def make_variants(out):
    """Stage 4: x2/x3/x4 SR variants of the train and test GT with the quickstart enhancer."""
    from gtplus_models.checkpoints import build_frozen_network
    from gtplus_models.super_resolve import arch_enhancer, write_variants
    enhancer = build_frozen_network(network_opt(out, 'enhancer'), latest_weights(out, 'enhancer'),
                                    'enhancer weights', torch.device('cpu'))
    from gtplus_data.lmdb_writer import is_complete
    for split in ('train', 'test'):
        if all(is_complete(path) for path in variant_roots(out, split)):
            continue
        write_variants(osp.join(out, 'data', f'{split}_gt.lmdb'), osp.join(out, 'data', f'{split}_sr'),
                       ENHANCER_SCALES, arch_enhancer(enhancer), colour_align='wavelet')


def frozen_cfmg(out):
    from gtplus_models.checkpoints import build_frozen_network
    return build_frozen_network(network_opt(out, 'cfmg'), latest_weights(out, 'cfmg'), 'CFMG weights',
                                torch.device('cpu'))


def variant_roots(out, split):
    return [osp.join(out, 'data', f'{split}_sr', f'sr_x{s}.lmdb') for s in ENHANCER_SCALES]


def make_enhanced_gt(out, cond):
    """Stage 6: Î(c) of the held-out GT, written as an LMDB (``gtplus enhance-gt`` logic)."""
    from gtplus_data.lmdb_writer import is_complete
    from gtplus_models.enhance_gt import write_enhanced_gt
    target = osp.join(out, 'data', f'test_enhanced_gt_c{cond:.2f}.lmdb')
    if not is_complete(target):
        write_enhanced_gt(frozen_cfmg(out), osp.join(out, 'data', 'test_gt.lmdb'), variant_roots(out, 'test'), target,
                          cond)


def refine_test_photos(out, cond):
    """Stage 8: restorer, then restorer + ORNet at c and at the sweep values, on the held-out LQ."""
    from gtplus_data.image_source import ImageSource
    from gtplus_models.checkpoints import build_frozen_network
    from gtplus_models.refine import refine_source
    device = torch.device('cpu')
    restorer = build_frozen_network(network_opt(out, 'restorer'), latest_weights(out, 'restorer'), 'restorer',
                                    device)
    ornet = build_frozen_network(network_opt(out, 'ornet'), latest_weights(out, 'ornet'), 'ORNet', device)
    conds = sorted(set(SWEEP_CONDS) | {cond})
    refine_dir = osp.join(out, 'refine')
    refine_source(ImageSource(osp.join(out, 'data', 'test_lq.lmdb')), refine_dir, restorer, ornet, conds)
    return refine_dir


def evaluate(out, refine_dir, cond):
    """PSNR/SSIM vs GT and vs pristine, NIQE and PIQE, for GT, enhanced GT, restorer and restorer + ORNet."""
    from gtplus_models.evaluation import evaluate_images, summarise
    from gtplus_data.image_source import ImageSource
    from gtplus_models.refine import cond_folder
    data = osp.join(out, 'data')
    sources = {
        'gt': ImageSource(osp.join(data, 'test_gt.lmdb')),
        'enhanced_gt': ImageSource(osp.join(data, f'test_enhanced_gt_c{cond:.2f}.lmdb')),
        'restorer': ImageSource(osp.join(refine_dir, 'restored')),
        'restorer_ornet': ImageSource(osp.join(refine_dir, cond_folder(cond))),
    }
    references = {'gt': ImageSource(osp.join(data, 'test_gt.lmdb')),
                  'pristine': ImageSource(osp.join(data, 'test_pristine.lmdb'))}
    per_image = evaluate_images(sources, references)
    return summarise(per_image, cond, TEST_PHOTOS)


def write_report(out, report):
    from gtplus_models.evaluation import report_markdown
    with open(osp.join(out, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    with open(osp.join(out, 'report.md'), 'w') as f:
        f.write(report_markdown(report))


def make_figures(out, refine_dir, cond):
    from gtplus_models.evaluation import quickstart_figures
    quickstart_figures(out, refine_dir, frozen_cfmg(out), variant_roots(out, 'test'), cond, SWEEP_CONDS)
