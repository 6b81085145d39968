"""Quickstart pipeline ``undertrained``: undertrained VQ-VAE-2 reconstruction as an SR degradation, on a CPU.

The task (a real LR that no synthesizer imitates): the camera world of :mod:`gtplus_models.quickstart.camera_sr`.
No synthesizer here makes the camera's degradations (Real-ESRGAN's blur is Gaussian/sinc, its noise is added in sRGB
per pixel, its resize is bicubic/bilinear/area in sRGB), so the test asks what each set of synthetic pairs teaches
about an unseen camera. Six photos train; chelsea and rocket are held out (``--photos DIR [--holdout ...]``).

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
import os.path as osp

from gtplus_data.degradations import CAMERA_LR
from gtplus_data.image_source import ImageSource
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.quickstart import camera_sr
from gtplus_models.quickstart.camera_sr import SCALE, SYNTH_SEED, data_path, pair_prefix, real_prefix
from gtplus_models.quickstart.common import latest_weights, network_opt, train_stage
from gtplus_models.quickstart.report import improved_metrics, write_report

NAME = 'undertrained'
TEMPLATES = 'undertrained'  # quickstart/templates/<TEMPLATES>/
HELP = ('undertrained VQ-VAE-2 degradation vs bicubic and Real-ESRGAN pairs for SR fine-tuning, tested on an unseen '
        'camera-like LR (about 3.5 minutes on 2 CPU cores)')
PHOTO_SIZE = camera_sr.PHOTO_SIZE
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
    """--size: a multiple of 8, at least 128 (:func:`camera_sr.check_size`)."""
    camera_sr.check_size(size, NAME)


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


def synthesize_pair_sets(out):
    """Stage 4: ``gtplus synthesize`` of the training HR with every synthesizer of :func:`pair_sets`."""
    from gtplus_models.tools.synthesize import synthesize
    for name, _, synth_opt, weights in pair_sets(out):
        prefix = pair_prefix(out, name)
        if not (is_complete(f'{prefix}_lq.lmdb') and is_complete(f'{prefix}_gt.lmdb')):
            synthesize(data_path(out, 'train_hr.lmdb'), prefix, synth_opt, SYNTH_SEED, weights_path=weights,
                       preview=2)


def degradation_summary(out):
    """Stage 5: the degradation report of the camera's pairs and every synthesized set (training photos)."""
    sets = [(label, pair_prefix(out, name)) for name, label, *_ in pair_sets(out)]
    return camera_sr.degradation_summary(out, sets, pair_prefix(out, 'bicubic'))


def sweep_figure(out, path):
    """Per training photo: bicubic HR↓, each VQ-VAE-2 snapshot's LR_deg, Real-ESRGAN's LR and the camera's LR."""
    names = ['bicubic'] + [f'vqvae2_ep{e}' for e in SWEEP_EPOCHS] + ['realesrgan']
    labels = ['bicubic x1/4'] + [f'VQ-VAE-2 ep{e}' for e in SWEEP_EPOCHS] + ['Real-ESRGAN']  # the font has no arrows
    sources = [(label, ImageSource(f'{pair_prefix(out, name)}_lq.lmdb')) for name, label in zip(names, labels)]
    sources.append((camera_sr.CAMERA_LABEL, ImageSource(f'{real_prefix(out, "train")}_lq.lmdb')))
    return camera_sr.lr_sheet(sources, path)


def run(out, size=PHOTO_SIZE, iters=None, cond=None, photos=None, holdout=None):
    """All stages; returns the report dict (also written to OUT/report.json and OUT/report.md).

    Args:
        out (str): output folder.
        size (int): side of the square HR photos (a multiple of 8, >= 128).
        iters (int | None): override every SR training stage's iterations (a quick preview; None: the templates').
            The VQ-VAE-2 sweep keeps its epochs (its snapshots are what the pipeline compares).
        cond: unused (the enhanced-supervision pipeline's c); accepted so that ``--pipeline all`` passes it.
        photos (str | None): a folder of the user's photographs instead of the embedded ones.
        holdout (list[str] | None): photo names held out for the report.
    """
    out, timed, test_keys, validate_at_end = camera_sr.start(out, NAME, TEMPLATES, size, photos, holdout, iters)
    timed('train_vqvae2', train_stage, out, TEMPLATES, 'vqvae2')
    timed('synthesize', synthesize_pair_sets, out)
    degradations = timed('degradation_report', degradation_summary, out)
    for name in FINETUNES:
        timed(f'finetune_{name}', train_stage, out, TEMPLATES, f'finetune_{name}', iters, validate_at_end)
    stages = {'pretrained': 'pretrain', **{name: f'finetune_{name}' for name in FINETUNES}}
    timed('super_resolve', camera_sr.super_resolve_test, out, TEMPLATES, stages)
    report = timed('report', camera_sr.evaluate, out, test_keys, SOURCE_LABELS, COMPARISONS, 'undertrained',
                   'bicubic', f'VQ-VAE-2 epoch-{FINETUNE_EPOCH} pairs')
    resr = improved_metrics(report['mean'], 'realesrgan', 'bicubic')
    report['summary'] += f' Real-ESRGAN pairs beat bicubic pairs on {len(resr)}: {", ".join(resr) or "none"}.'
    report['degradations'] = degradations
    report['tables'] = [camera_sr.degradation_table(degradations)]
    report['timings_s'] = timed.report()
    report['settings'] = {'photo_size': size, 'scale': SCALE,
                          'iterations': iters or f'as in quickstart/templates/{TEMPLATES}/*.yml',
                          'camera_lr': CAMERA_LR, 'sweep_epochs': list(SWEEP_EPOCHS),
                          'finetune_epoch': FINETUNE_EPOCH, 'photos': photos or 'embedded (skimage.data)',
                          'test_photos': list(test_keys)}
    write_report(out, report, 'gtplus quickstart report: undertrained reconstruction as an SR degradation')
    figures = osp.join(out, 'figures')
    short = {'pretrained': 'pretrained', 'bicubic': '+bicubic', 'realesrgan': '+Real-ESRGAN',
             'undertrained': f'+VQ-VAE-2 ep{FINETUNE_EPOCH}'}
    timed('figures', camera_sr.comparison_figure, out, test_keys, short, osp.join(figures, 'comparison.png'))
    sweep_figure(out, osp.join(figures, 'degradation_sweep.png'))
    return report
