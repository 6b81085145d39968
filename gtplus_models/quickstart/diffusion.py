"""Quickstart pipeline ``diffusion``: an LQ-domain DDPM refines Real-ESRGAN's degradation (SDEdit), on a CPU.

The world is :mod:`gtplus_models.quickstart.camera_sr`'s, the same as the ``undertrained`` pipeline's: the held-out
photos' camera-like LR is the "real" test. Here the training photos' camera LR plays the paper's "collected real LQ
images": the DDPM learns their distribution (no HR involved), and the synthesizer pulls Real-ESRGAN's LQ towards it.

Stages (each skipped when its output exists, so a rerun resumes; templates in ``quickstart/templates/diffusion/``):
1. data (camera_sr); 2. pretrain: SRVGGNetCompact x4 on online bicubic pairs;
3. ddpm: a tiny LQDiffusionModel on the training photos' camera LR, exported as a diffusers folder;
4. ``gtplus synthesize`` of the training HR, VARIANTS per photo, with bicubic (the reference), Real-ESRGAN stablesr
   (the control) and DiffusionRefinedSynthesizer (stablesr, then the DDPM; the method). Same seeds, so each
   refined LQ is the control's LQ of the same key, refined;
5. the degradation report of those beside the camera's; 6. fine-tune the pretrained network at the same budget
   on the stablesr pairs and on the diffusion-refined pairs (plain SRModel on the pair LMDBs);
7. super-resolve the held-out camera LR; 8. report.json / report.md and figures (comparison, LR sheet, strength
   sweep).
"""
import os.path as osp

import torch

from gtplus_data.degradations import CAMERA_LR
from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import image_to_tensor, tensor_to_image, to_uint8, write_png
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.quickstart import camera_sr
from gtplus_models.quickstart.camera_sr import SCALE, SYNTH_SEED, data_path, pair_prefix, real_prefix
from gtplus_models.quickstart.common import network_opt, train_stage
from gtplus_models.quickstart.report import write_report
from gtplus_data.figures import labelled_strip, stack_rows

NAME = 'diffusion'
TEMPLATES = 'diffusion'  # quickstart/templates/<TEMPLATES>/
HELP = ('an LQ-domain DDPM refining Real-ESRGAN pairs (SDEdit) vs the plain Real-ESRGAN pairs for SR fine-tuning, '
        'tested on an unseen camera-like LR (about 4 minutes on 2 CPU cores)')
PHOTO_SIZE = camera_sr.PHOTO_SIZE
VARIANTS = 8  # LQ per training photo in every pair set (`gtplus synthesize --variants`)
# Pair sets: name -> (template synth_<name>.yml, label in the degradation report), in report order.
PAIR_SETS = {'bicubic': 'bicubic', 'stablesr': 'Real-ESRGAN stablesr', 'diffusion': 'diffusion-refined'}
FINETUNES = ('stablesr', 'diffusion')
SOURCE_LABELS = {'pretrained': 'bicubic-pretrained (no fine-tune)',
                 'stablesr': 'fine-tuned on Real-ESRGAN (stablesr) pairs',
                 'diffusion': 'fine-tuned on diffusion-refined pairs'}
COMPARISONS = (('diffusion', 'stablesr'), ('stablesr', 'pretrained'), ('diffusion', 'pretrained'))
SWEEP_STRENGTHS = (0.0, 0.1, 0.25, 0.5)


def synth_block(out, name):
    """The ``network_synth`` block of pair set ``name`` (template ``synth_<name>.yml``, paths filled in)."""
    return network_opt(out, TEMPLATES, f'synth_{name}', 'network_synth')


def synthesize_pair_sets(out):
    """Stage 4: ``gtplus synthesize`` of the training HR with every synthesizer of PAIR_SETS, VARIANTS each."""
    from gtplus_models.tools.synthesize import synthesize
    for name in PAIR_SETS:
        prefix = pair_prefix(out, name)
        if not (is_complete(f'{prefix}_lq.lmdb') and is_complete(f'{prefix}_gt.lmdb')):
            synthesize(data_path(out, 'train_hr.lmdb'), prefix, synth_block(out, name), SYNTH_SEED,
                       variants=VARIANTS, preview=2)


def strength_sweep_figure(out, path, num_keys=2):
    """Per training photo: the stablesr LQ (variant 0) refined by the DDPM at each of SWEEP_STRENGTHS (0: the LQ
    itself), beside the camera LR, enlarged x SCALE (nearest)."""
    from gtplus_models.synthesis import load_synthesizer
    synth = load_synthesizer(synth_block(out, 'diffusion'))
    stablesr = ImageSource(f'{pair_prefix(out, "stablesr")}_lq.lmdb')
    camera = ImageSource(f'{real_prefix(out, "train")}_lq.lmdb')
    rows = []
    for key in camera.keys[:num_keys]:
        lq = image_to_tensor(stablesr.read(f'{key}_v0'))
        panels = []
        for strength in SWEEP_STRENGTHS:
            refined = synth.refine(lq, strength, torch.Generator().manual_seed(SYNTH_SEED))
            label = f'stablesr LQ [{key}]' if strength == 0 else f'refined s={strength:g}'
            panels.append((label, to_uint8(tensor_to_image(refined)).repeat(SCALE, 0).repeat(SCALE, 1)))
        panels.append((camera_sr.CAMERA_LABEL, to_uint8(camera.read(key)).repeat(SCALE, 0).repeat(SCALE, 1)))
        rows.append(labelled_strip(panels))
    write_png(path, stack_rows(rows))
    return path


def run(out, size=PHOTO_SIZE, iters=None, cond=None, photos=None, holdout=None):
    """All stages; returns the report dict (also written to OUT/report.json and OUT/report.md).

    Args:
        out (str): output folder.
        size (int): side of the square HR photos (a multiple of 8, >= 128).
        iters (int | None): override every training stage's iterations (a quick preview; None: the templates').
        cond: unused (the enhanced-supervision pipeline's c); accepted so that ``--pipeline all`` passes it.
        photos (str | None): a folder of the user's photographs instead of the embedded ones.
        holdout (list[str] | None): photo names held out for the report.
    """
    out, timed, test_keys, validate_at_end = camera_sr.start(out, NAME, TEMPLATES, size, photos, holdout, iters)
    timed('train_ddpm', train_stage, out, TEMPLATES, 'ddpm', iters)
    timed('synthesize', synthesize_pair_sets, out)
    degradations = timed('degradation_report', camera_sr.degradation_summary, out,
                         [(label, pair_prefix(out, name)) for name, label in PAIR_SETS.items()],
                         pair_prefix(out, 'bicubic'))
    for name in FINETUNES:
        timed(f'finetune_{name}', train_stage, out, TEMPLATES, f'finetune_{name}', iters, validate_at_end)
    stages = {'pretrained': 'pretrain', **{name: f'finetune_{name}' for name in FINETUNES}}
    timed('super_resolve', camera_sr.super_resolve_test, out, TEMPLATES, stages)
    report = timed('report', camera_sr.evaluate, out, test_keys, SOURCE_LABELS, COMPARISONS, 'diffusion',
                   'stablesr', 'diffusion-refined pairs')
    report['degradations'] = degradations
    report['tables'] = [camera_sr.degradation_table(degradations)]
    report['timings_s'] = timed.report()
    report['settings'] = {'photo_size': size, 'scale': SCALE, 'variants': VARIANTS,
                          'iterations': iters or f'as in quickstart/templates/{TEMPLATES}/*.yml',
                          'camera_lr': CAMERA_LR, 'synthesizer': synth_block(out, 'diffusion'),
                          'photos': photos or 'embedded (skimage.data)', 'test_photos': list(test_keys)}
    write_report(out, report, 'gtplus quickstart report: diffusion-refined LQ for SR fine-tuning')
    figures = osp.join(out, 'figures')
    short = {'pretrained': 'pretrained', 'stablesr': '+Real-ESRGAN stablesr', 'diffusion': '+diffusion-refined'}
    timed('figures', camera_sr.comparison_figure, out, test_keys, short, osp.join(figures, 'comparison.png'))
    sources = [(label, ImageSource(f'{pair_prefix(out, name)}_lq.lmdb')) for name, label in PAIR_SETS.items()]
    camera_sr.lr_sheet([(camera_sr.CAMERA_LABEL, ImageSource(f'{real_prefix(out, "train")}_lq.lmdb'))] + sources,
                       osp.join(figures, 'lr_sets.png'))
    strength_sweep_figure(out, osp.join(figures, 'strength_sweep.png'))
    return report
