"""Quickstart pipeline ``undertrained``: undertrained VQ-VAE-2 reconstruction as an SR degradation, on a CPU.

The task (a real LR that no synthesizer imitates). From each pristine photo (short side resized to 256, centre-cropped
to 256²), the HR; the held-out photos' "real" LR is :func:`gtplus_data.degradations.camera_lr` at x4: a defocus
disk in linear light, sensor-area integration, a white-balance error, Poisson-Gaussian noise on an RGGB mosaic,
bilinear demosaicing, the sRGB curve and JPEG 4:2:0 (:data:`~gtplus_data.degradations.CAMERA_LR`). No synthesizer
here makes any of those (Real-ESRGAN's blur is Gaussian/sinc, its noise is added in sRGB per pixel, its resize is
bicubic/bilinear/area in sRGB), so the test asks what each set of synthetic pairs teaches about an unseen camera.
Six photos train; chelsea and rocket are held out (``--photos DIR [--holdout ...]`` for a user's own).

Stages (each skipped when its output exists, so a rerun resumes; templates in ``quickstart/templates/undertrained/``):
1. data: HR of the training photos; the held-out photos' (camera LR, HR) pair; and the camera LR of the training
   photos, used only as the "real" column of the degradation report (never trained on);
2. pretrain: a small SRVGGNetCompact x4 (basicsr) on online bicubic pairs (the usual bicubic-pretrained start);
3. vqvae2: a tiny VQ-VAE-2 reconstructing the bicubic LR, snapshots at epochs SWEEP_EPOCHS;
4. synthesize (``gtplus synthesize``'s engine): pairs of the training photos from bicubic, Real-ESRGAN and each
   VQ-VAE-2 snapshot; 5. degradation report of those sets beside the camera's (``gtplus degradation-report``);
6. fine-tune the pretrained network at the same budget on online (a) bicubic, (b) Real-ESRGAN and (c) VQ-VAE-2 epoch
   FINETUNE_EPOCH pairs (SynthesizedSRModel); 7. super-resolve the held-out camera LR with each model;
8. report.json / report.md (PSNR/SSIM against the HR, NIQE, PIQE; verdicts against the bicubic control) and figures.
"""
import os
import os.path as osp

import torch

from gtplus_data.degradations import CAMERA_LR, camera_lr, key_seed
from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import image_to_tensor, tensor_to_image, to_uint8, write_png
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.quickstart.common import (MIN_PHOTO_SIZE, StageTimer, latest_weights, load_photos,
                                             load_stage_network, network_opt, split_photos, train_stage, write_lmdb,
                                             write_originals)
from gtplus_models.quickstart.report import evaluate_images, improved_metrics, summarise, write_report
from gtplus_models.tools.figures import labelled_strip, stack_rows
from gtplus_models.tools.tiling import run_chain

NAME = 'undertrained'
TEMPLATES = 'undertrained'  # quickstart/templates/<TEMPLATES>/
HELP = ('undertrained VQ-VAE-2 degradation vs bicubic and Real-ESRGAN pairs for SR fine-tuning, tested on an unseen '
        'camera-like LR (about 5 minutes on 2 CPU cores)')
TEST_PHOTOS = ('chelsea', 'rocket')
PHOTO_SIZE = 256
SCALE = 4
CAMERA_SEED = 0  # the camera noise of photo k is seeded by key_seed(CAMERA_SEED, '<k>/camera')
SYNTH_SEED = 0   # the seed of `gtplus synthesize` for every pair set
# vqvae2.yml's train.snapshot_epochs, and the snapshot finetune_undertrained.yml loads (tests check both agree).
SWEEP_EPOCHS = (2, 4, 8, 16, 32, 64)
FINETUNE_EPOCH = 32
# Fine-tuning stages: template finetune_<name>.yml; the pretrained start is the 'pretrain' stage.
FINETUNES = ('bicubic', 'realesrgan', 'undertrained')
SOURCE_LABELS = {'pretrained': 'bicubic-pretrained (no fine-tune)', 'bicubic': 'fine-tuned on bicubic pairs',
                 'realesrgan': 'fine-tuned on Real-ESRGAN pairs',
                 'undertrained': f'fine-tuned on VQ-VAE-2 epoch-{FINETUNE_EPOCH} pairs'}
# The method against its control (the same network, start and budget on bicubic pairs), and the other comparisons.
COMPARISONS = (('undertrained', 'bicubic'), ('realesrgan', 'bicubic'), ('undertrained', 'realesrgan'),
               ('bicubic', 'pretrained'))


def check_size(size):
    """--size: at least MIN_PHOTO_SIZE and a multiple of 2 * SCALE (the camera's RGGB mosaic needs an even LR)."""
    if size < MIN_PHOTO_SIZE or size % (2 * SCALE):
        raise ValueError(f'--size must be a multiple of {2 * SCALE} and at least {MIN_PHOTO_SIZE} for the '
                         f'{NAME} pipeline, got {size}')


def data_path(out, name):
    return osp.join(out, 'data', name)


def camera_pairs(photos):
    """{key: HR} -> {key: camera LR} (:func:`camera_lr` with the default CAMERA_LR, a seed per key)."""
    return {key: camera_lr(img, SCALE, key_seed(CAMERA_SEED, f'{key}/camera')) for key, img in photos.items()}


def load_splits(size=PHOTO_SIZE, photos=None, holdout=None):
    """{'train': {key: HR image}, 'test': {...}}, checked before anything is written."""
    check_size(size)
    train, test = split_photos(load_photos(size, photos), holdout, TEST_PHOTOS)
    return {'train': train, 'test': test}


def prepare_data(out, splits, photos=None):
    """Stage 1: data/train_hr.lmdb and the camera pairs data/{train,test}_real_{lq,gt}.lmdb (the layout of
    ``gtplus synthesize``, so the degradation report reads them too). Returns ``splits``."""
    write_originals(out, photos)
    train, test = splits['train'], splits['test']
    write_lmdb(data_path(out, 'train_hr.lmdb'), train)
    for split, images in (('train', train), ('test', test)):
        if not (is_complete(data_path(out, f'{split}_real_lq.lmdb')) and
                is_complete(data_path(out, f'{split}_real_gt.lmdb'))):
            write_lmdb(data_path(out, f'{split}_real_gt.lmdb'), images)
            write_lmdb(data_path(out, f'{split}_real_lq.lmdb'), camera_pairs(images))
    return splits


def snapshot_path(out, epoch):
    """Where stage 3 leaves the VQ-VAE-2 of ``epoch`` (ReconstructionModel's ``net_g_epoch<k>.pth``)."""
    return osp.join(osp.dirname(latest_weights(out, 'vqvae2')), f'net_g_epoch{epoch}.pth')


def pair_sets(out):
    """[(name, label, network_synth block, weights or None)] of stage 4, in report order."""
    undertrained = network_opt(out, TEMPLATES, 'finetune_undertrained', 'network_synth')
    sets = [('bicubic', 'bicubic', network_opt(out, TEMPLATES, 'finetune_bicubic', 'network_synth'), None),
            ('realesrgan', 'Real-ESRGAN', network_opt(out, TEMPLATES, 'finetune_realesrgan', 'network_synth'), None)]
    return sets + [(f'vqvae2_ep{epoch}', f'VQ-VAE-2 ep{epoch}', undertrained, snapshot_path(out, epoch))
                   for epoch in SWEEP_EPOCHS]


def pair_prefix(out, name):
    return data_path(out, osp.join('pairs', name))


def synthesize_pair_sets(out):
    """Stage 4: ``gtplus synthesize`` of the training HR with every synthesizer of :func:`pair_sets`."""
    from gtplus_models.tools.synthesize import synthesize
    for name, _, synth_opt, weights in pair_sets(out):
        prefix = pair_prefix(out, name)
        if not (is_complete(f'{prefix}_lq.lmdb') and is_complete(f'{prefix}_gt.lmdb')):
            synthesize(data_path(out, 'train_hr.lmdb'), prefix, synth_opt, SYNTH_SEED, weights_path=weights,
                       preview=2)


def degradation_summary(out):
    """Stage 5: ``gtplus degradation-report`` of the camera's pairs and every synthesized set (training photos).

    Returns:
        dict: 'sets' -> {label: {'delta_e_mean', 'diversity'}}, and the report's folder.
    """
    import json

    from gtplus_models.tools.degradation_report import degradation_report
    report_dir = osp.join(out, 'degradation_report')
    prefixes = [data_path(out, 'train_real')] + [pair_prefix(out, name) for name, *_ in pair_sets(out)]
    labels = ['camera (real)'] + [label for _, label, *_ in pair_sets(out)]
    degradation_report(prefixes, report_dir, samples=2)
    with open(osp.join(report_dir, 'report.json')) as f:
        sets = json.load(f)['sets']
    return {'folder': report_dir,
            'sets': {label: {'psnr_to_bicubic': psnr_to_bicubic(out, prefix),
                             'delta_e_mean': entry['delta_e']['mean'],
                             'diversity': entry['diversity']['normalised_entropy']}
                     for label, prefix, entry in zip(labels, prefixes, sets)}}


def psnr_to_bicubic(out, prefix):
    """Mean PSNR (dB, RGB, 8-bit) of a pair set's LR against the bicubic HR↓ of the same photos: how far the
    degradation moves the LR (for a reconstruction snapshot, how well it reconstructs). Keys ``<key>`` or
    ``<key>_v<i>`` are matched to the bicubic set's ``<key>``."""
    from basicsr.metrics import calculate_psnr
    bicubic = ImageSource(f'{pair_prefix(out, "bicubic")}_lq.lmdb')
    source = ImageSource(f'{prefix}_lq.lmdb')
    values = []
    for key in source.keys:
        reference = key if key in bicubic.keys else key.rsplit('_v', 1)[0]
        values.append(calculate_psnr(to_uint8(source.read(key)), to_uint8(bicubic.read(reference)), crop_border=0))
    finite = [v for v in values if v != float('inf')]
    return float(sum(finite) / len(finite)) if finite else None


def sr_folder(out, name):
    return osp.join(out, 'sr', name)


def super_resolve_test(out):
    """Stage 7: each model on the held-out camera LR, written to OUT/sr/<name>/<key>.png."""
    source = ImageSource(data_path(out, 'test_real_lq.lmdb'))
    stages = {'pretrained': 'pretrain', **{name: f'finetune_{name}' for name in FINETUNES}}
    for name, stage in stages.items():
        folder = sr_folder(out, name)
        if all(osp.isfile(osp.join(folder, f'{key}.png')) for key in source.keys):
            continue
        net = load_stage_network(out, TEMPLATES, stage)
        for key in source.keys:
            with torch.no_grad():
                sr = run_chain([(net, False)], image_to_tensor(source.read(key)))
            write_png(osp.join(folder, f'{key}.png'), tensor_to_image(sr))


def evaluate(out, test_keys):
    """PSNR/SSIM against the HR, NIQE and PIQE of every model's output on the held-out camera LR."""
    sources = {name: ImageSource(sr_folder(out, name)) for name in SOURCE_LABELS}
    references = {'pristine': ImageSource(data_path(out, 'test_real_gt.lmdb'))}
    report = summarise(evaluate_images(sources, references), test_keys, SOURCE_LABELS, COMPARISONS)
    means = report['mean']
    gain = improved_metrics(means, 'undertrained', 'bicubic')
    resr = improved_metrics(means, 'realesrgan', 'bicubic')
    lost = [m for m in means['bicubic'] if m not in gain]
    report['summary'] = (
        f'On the held-out camera LR, fine-tuning on VQ-VAE-2 epoch-{FINETUNE_EPOCH} pairs beat the same fine-tuning '
        f'on bicubic pairs on {len(gain)} of {len(means["bicubic"])} metrics ({", ".join(gain) or "none"}) and did '
        f'not on {", ".join(lost) or "none"}; Real-ESRGAN pairs beat it on {len(resr)} '
        f'({", ".join(resr) or "none"}). '
        + ('The undertrained degradation did not help here. ' if not gain else '')
        + f'{len(test_keys)} photos and minutes of CPU training: treat differences as indicative only.')
    return report


def comparison_figure(out, test_keys, path):
    """Per held-out photo: the camera LR (nearest x4), each model's output and the HR."""
    lq = ImageSource(data_path(out, 'test_real_lq.lmdb'))
    hr = ImageSource(data_path(out, 'test_real_gt.lmdb'))
    short = {'pretrained': 'pretrained', 'bicubic': '+bicubic', 'realesrgan': '+Real-ESRGAN',
             'undertrained': f'+VQ-VAE-2 ep{FINETUNE_EPOCH}'}
    rows = []
    for key in test_keys:
        low = to_uint8(lq.read(key)).repeat(SCALE, axis=0).repeat(SCALE, axis=1)
        panels = [(f'camera LR [{key}]', low)]
        panels += [(label, to_uint8(ImageSource(sr_folder(out, name)).read(key))) for name, label in short.items()]
        rows.append(labelled_strip(panels + [('HR', to_uint8(hr.read(key)))]))
    write_png(path, stack_rows(rows))
    return path


def sweep_figure(out, path, num_keys=2):
    """Per training photo: bicubic HR↓, each VQ-VAE-2 snapshot's LR_deg, Real-ESRGAN's LR and the camera's LR,
    enlarged x4 (nearest) so that the degradations are visible."""
    sets = [('bicubic', 'bicubic x1/4')]  # OpenCV's label font has no arrows + [(f'vqvae2_ep{e}', f'VQ-VAE-2 ep{e}') for e in SWEEP_EPOCHS]
    sources = [(label, ImageSource(f'{pair_prefix(out, name)}_lq.lmdb')) for name, label in sets]
    sources += [('Real-ESRGAN', ImageSource(f'{pair_prefix(out, "realesrgan")}_lq.lmdb')),
                ('camera (real)', ImageSource(data_path(out, 'train_real_lq.lmdb')))]
    rows = []
    for key in sources[0][1].keys[:num_keys]:
        panels = [(f'{label} [{key}]' if i == 0 else label,
                   to_uint8(source.read(key)).repeat(SCALE, axis=0).repeat(SCALE, axis=1))
                  for i, (label, source) in enumerate(sources)]
        rows.append(labelled_strip(panels))
    write_png(path, stack_rows(rows))
    return path


def run(out, size=PHOTO_SIZE, iters=None, cond=None, photos=None, holdout=None):
    """All stages; returns the report dict (also written to OUT/report.json and OUT/report.md).

    Args:
        out (str): output folder.
        size (int): side of the square HR photos (a multiple of 8, >= 128).
        iters (int | None): override every training stage's iterations (a quick preview; None: the templates').
            The VQ-VAE-2 sweep keeps its epochs (its snapshots are what the pipeline compares).
        cond: unused (the enhanced-supervision pipeline's c); accepted so that ``--pipeline all`` passes it.
        photos (str | None): a folder of the user's photographs instead of the embedded ones.
        holdout (list[str] | None): photo names held out for the report.
    """
    splits = load_splits(size, photos, holdout)
    out = osp.abspath(out)
    os.makedirs(out, exist_ok=True)
    timed = StageTimer()
    timed('data', prepare_data, out, splits, photos)
    test_keys = tuple(sorted(splits['test']))
    timed('train_pretrain', train_stage, out, TEMPLATES, 'pretrain', iters, [f'val:val_freq={iters}'] if iters else [])
    timed('train_vqvae2', train_stage, out, TEMPLATES, 'vqvae2')
    timed('synthesize', synthesize_pair_sets, out)
    degradations = timed('degradation_report', degradation_summary, out)
    for name in FINETUNES:
        timed(f'finetune_{name}', train_stage, out, TEMPLATES, f'finetune_{name}', iters,
              [f'val:val_freq={iters}'] if iters else [])
    timed('super_resolve', super_resolve_test, out)
    report = timed('report', evaluate, out, test_keys)
    report['degradations'] = degradations
    report['tables'] = [{
        'title': 'Degradations of the training photos (gtplus degradation-report; ΔE: CIEDE2000 between bicubic '
                 'HR↓ and LR; diversity: cluster entropy / log2 k, 0-1; bicubic\'s own PSNR: identical)',
        'column': 'pair set',
        'headers': {'psnr_to_bicubic': 'PSNR to HR↓ (dB)', 'delta_e_mean': 'mean ΔE', 'diversity': 'diversity'},
        'rows': degradations['sets']}]
    report['timings_s'] = timed.report()
    report['settings'] = {'photo_size': size, 'scale': SCALE,
                          'iterations': iters or f'as in quickstart/templates/{TEMPLATES}/*.yml',
                          'camera_lr': CAMERA_LR, 'sweep_epochs': list(SWEEP_EPOCHS),
                          'finetune_epoch': FINETUNE_EPOCH, 'photos': photos or 'embedded (skimage.data)',
                          'test_photos': list(test_keys)}
    write_report(out, report, 'gtplus quickstart report: undertrained reconstruction as an SR degradation')
    figures = osp.join(out, 'figures')
    timed('figures', comparison_figure, out, test_keys, osp.join(figures, 'comparison.png'))
    sweep_figure(out, osp.join(figures, 'degradation_sweep.png'))
    return report
