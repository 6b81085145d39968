"""The SR experiment the degradation-synthesizer pipelines share (``undertrained``, ``diffusion``).

The world: HR = each pristine photo at PHOTO_SIZE²; the held-out photos' "real" LR is
:func:`gtplus_data.degradations.camera_lr` at x SCALE (a camera chain no synthesizer imitates: defocus disk and
sensor-area integration in linear light, a white-balance error, Poisson-Gaussian noise on an RGGB mosaic, bilinear
demosaicing, the sRGB curve, JPEG 4:2:0; defaults :data:`~gtplus_data.degradations.CAMERA_LR`). The training
photos' camera LR is written too, for the pipelines that use real LQ without HR (the diffusion pipeline's DDPM) and
as the "camera (real)" column of the degradation report; no SR network ever trains on it.

The stages here: the data, a bicubic-pretrained SR network (each pipeline's ``pretrain`` template), the SR of the
held-out camera LR by every trained network, the report (PSNR/SSIM against the HR, NIQE, PIQE, verdicts against a
control) and the comparison figure. Each pipeline adds its synthesizers and fine-tuning stages.
"""
import json
import os
import os.path as osp

import torch

from gtplus_data.degradations import camera_lr, key_seed
from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import image_to_tensor, tensor_to_image, to_uint8, write_png
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.quickstart.common import (MIN_PHOTO_SIZE, StageTimer, load_photos, load_stage_network, split_photos,
                                             train_stage, write_lmdb, write_originals)
from gtplus_models.quickstart.report import evaluate_images, improved_metrics, summarise
from gtplus_data.figures import labelled_strip, stack_rows
from gtplus_models.tools.tiling import run_chain

TEST_PHOTOS = ('chelsea', 'rocket')
PHOTO_SIZE = 256
SCALE = 4
CAMERA_SEED = 0  # the camera noise of photo k is seeded by key_seed(CAMERA_SEED, '<k>/camera')
SYNTH_SEED = 0   # the seed of `gtplus synthesize` for every pair set
CAMERA_LABEL = 'camera (real)'


def check_size(size, pipeline):
    """--size: at least MIN_PHOTO_SIZE and a multiple of 2 * SCALE (the camera's RGGB mosaic needs an even LR)."""
    if size < MIN_PHOTO_SIZE or size % (2 * SCALE):
        raise ValueError(f'--size must be a multiple of {2 * SCALE} and at least {MIN_PHOTO_SIZE} for the '
                         f'{pipeline} pipeline, got {size}')


def data_path(out, name):
    return osp.join(out, 'data', name)


def pair_prefix(out, name):
    """PAIRS_PREFIX of a synthesized pair set of the training photos (``gtplus synthesize``'s layout)."""
    return data_path(out, osp.join('pairs', name))


def real_prefix(out, split):
    """PAIRS_PREFIX of a split's camera pairs (``<prefix>_lq.lmdb``: camera LR, ``<prefix>_gt.lmdb``: HR)."""
    return data_path(out, f'{split}_real')


def camera_pairs(photos):
    """{key: HR} -> {key: camera LR} (:func:`camera_lr` with the default CAMERA_LR, a seed per key)."""
    return {key: camera_lr(img, SCALE, key_seed(CAMERA_SEED, f'{key}/camera')) for key, img in photos.items()}


def load_splits(pipeline, size=PHOTO_SIZE, photos=None, holdout=None):
    """{'train': {key: HR image}, 'test': {...}}, checked before anything is written."""
    check_size(size, pipeline)
    train, test = split_photos(load_photos(size, photos), holdout, TEST_PHOTOS)
    return {'train': train, 'test': test}


def prepare_data(out, splits, photos=None):
    """Stage 1: data/train_hr.lmdb and the camera pairs data/{train,test}_real_{lq,gt}.lmdb (the layout of
    ``gtplus synthesize``, so the degradation report reads them too). Returns ``splits``."""
    write_originals(out, photos)
    write_lmdb(data_path(out, 'train_hr.lmdb'), splits['train'])
    for split, images in splits.items():
        prefix = real_prefix(out, split)
        if not (is_complete(f'{prefix}_lq.lmdb') and is_complete(f'{prefix}_gt.lmdb')):
            write_lmdb(f'{prefix}_gt.lmdb', images)
            write_lmdb(f'{prefix}_lq.lmdb', camera_pairs(images))
    return splits


def start(out, pipeline, templates, size, photos, holdout, iters):
    """The first stages of a camera-SR pipeline: options checked, OUT made, the data (:func:`prepare_data`) and the
    bicubic-pretrained SR network (template ``pretrain``).

    Returns:
        tuple: (absolute OUT, the StageTimer, the held-out keys, the ``--force_yml`` entries that make a preview's
        SR stages validate once, at their last iteration).
    """
    splits = load_splits(pipeline, size, photos, holdout)
    out = osp.abspath(out)
    os.makedirs(out, exist_ok=True)
    timed = StageTimer()
    timed('data', prepare_data, out, splits, photos)
    validate_at_end = [f'val:val_freq={iters}'] if iters else []
    timed('train_pretrain', train_stage, out, templates, 'pretrain', iters, validate_at_end)
    return out, timed, tuple(sorted(splits['test'])), validate_at_end


def psnr_to_reference(prefix, reference_prefix):
    """Mean PSNR (dB, RGB, 8-bit) of a pair set's LR against another set's LR of the same photos (the bicubic
    HR↓): how far a degradation moves the LR. Keys match as they are, or ``<key>_v<i>`` (``--variants``) the
    reference's ``<key>``, or ``<key>`` the reference's ``<key>_v0``; None when every image equals its reference."""
    from basicsr.metrics import calculate_psnr
    reference = ImageSource(f'{reference_prefix}_lq.lmdb')
    source = ImageSource(f'{prefix}_lq.lmdb')
    values = []
    for key in source.keys:
        ref_key = next((k for k in (key, key.rsplit('_v', 1)[0], f'{key}_v0') if k in reference.keys), None)
        if ref_key is None:
            raise ValueError(f'{prefix}_lq.lmdb key {key!r} has no counterpart in {reference_prefix}_lq.lmdb')
        values.append(calculate_psnr(to_uint8(source.read(key)), to_uint8(reference.read(ref_key)), crop_border=0))
    finite = [v for v in values if v != float('inf')]
    return float(sum(finite) / len(finite)) if finite else None


def degradation_summary(out, sets, reference_prefix):
    """``gtplus degradation-report`` of the training photos' camera pairs and the synthesized sets.

    Args:
        out (str): the pipeline's folder (the report goes to OUT/degradation_report/).
        sets (list[tuple[str, str]]): (label, PAIRS_PREFIX) of each synthesized set, in report order.
        reference_prefix (str): the set whose LR is the bicubic HR↓ (for the PSNR column).

    Returns:
        dict: 'folder', and 'sets': {label: {'psnr_to_bicubic', 'delta_e_mean', 'diversity'}}.
    """
    from gtplus_models.tools.degradation_report import degradation_report
    report_dir = osp.join(out, 'degradation_report')
    labelled = [(CAMERA_LABEL, real_prefix(out, 'train'))] + list(sets)
    degradation_report([prefix for _, prefix in labelled], report_dir, samples=2)
    with open(osp.join(report_dir, 'report.json')) as f:
        entries = json.load(f)['sets']
    return {'folder': report_dir,
            'sets': {label: {'psnr_to_bicubic': psnr_to_reference(prefix, reference_prefix),
                             'delta_e_mean': entry['delta_e']['mean'],
                             'diversity': entry['diversity']['normalised_entropy']}
                     for (label, prefix), entry in zip(labelled, entries)}}


def degradation_table(degradations):
    """The report table of :func:`degradation_summary`'s sets."""
    return {'title': 'Degradations of the training photos (gtplus degradation-report; ΔE: CIEDE2000 between bicubic '
                     'HR↓ and LR; diversity: cluster entropy / log2 k, 0-1; bicubic\'s own PSNR: identical)',
            'column': 'pair set',
            'headers': {'psnr_to_bicubic': 'PSNR to HR↓ (dB)', 'delta_e_mean': 'mean ΔE', 'diversity': 'diversity'},
            'rows': degradations['sets']}


def sr_folder(out, name):
    return osp.join(out, 'sr', name)


def super_resolve_test(out, templates, stages):
    """Each trained SR network on the held-out camera LR, written to OUT/sr/<name>/<key>.png.

    Args:
        out (str): the pipeline's folder.
        templates (str): the pipeline's template folder name.
        stages (dict[str, str]): output name -> training stage whose ``net_g_latest.pth`` to run.
    """
    source = ImageSource(f'{real_prefix(out, "test")}_lq.lmdb')
    for name, stage in stages.items():
        folder = sr_folder(out, name)
        if all(osp.isfile(osp.join(folder, f'{key}.png')) for key in source.keys):
            continue
        net = load_stage_network(out, templates, stage)
        for key in source.keys:
            with torch.no_grad():
                sr = run_chain([(net, False)], image_to_tensor(source.read(key)))
            write_png(osp.join(folder, f'{key}.png'), tensor_to_image(sr))


def evaluate(out, test_keys, labels, comparisons, method, control, method_label):
    """PSNR/SSIM against the HR, NIQE and PIQE of every network's SR of the held-out camera LR.

    Args:
        labels (dict[str, str]): output name (an OUT/sr/ folder) -> label.
        comparisons (tuple[tuple[str, str]]): (new, old) pairs for the verdicts.
        method, control (str): the output names the summary compares (the method and the network trained the same
            way without its idea).
        method_label (str): how the summary names the method's pairs.

    Returns:
        dict: the report (see :func:`gtplus_models.quickstart.report.summarise`) with its summary.
    """
    sources = {name: ImageSource(sr_folder(out, name)) for name in labels}
    references = {'pristine': ImageSource(f'{real_prefix(out, "test")}_gt.lmdb')}
    report = summarise(evaluate_images(sources, references), test_keys, labels, comparisons)
    means = report['mean']
    gain = improved_metrics(means, method, control)
    lost = [m for m in means[control] if m not in gain]
    report['summary'] = (
        f'On the held-out camera LR, fine-tuning on {method_label} beat the same fine-tuning on '
        f'{labels[control].replace("fine-tuned on ", "")} on {len(gain)} of {len(means[control])} metrics '
        f'({", ".join(gain) or "none"}) and did not on {", ".join(lost) or "none"}. '
        + ('The method did not help here. ' if not gain else '')
        + f'{len(test_keys)} photos and minutes of CPU training: treat differences as indicative only.')
    return report


def comparison_figure(out, test_keys, short_labels, path):
    """Per held-out photo: the camera LR (nearest x SCALE), each network's output (``short_labels``: output name ->
    panel label) and the HR."""
    lq = ImageSource(f'{real_prefix(out, "test")}_lq.lmdb')
    hr = ImageSource(f'{real_prefix(out, "test")}_gt.lmdb')
    rows = []
    for key in test_keys:
        low = to_uint8(lq.read(key)).repeat(SCALE, axis=0).repeat(SCALE, axis=1)
        panels = [(f'camera LR [{key}]', low)]
        panels += [(label, to_uint8(ImageSource(sr_folder(out, name)).read(key)))
                   for name, label in short_labels.items()]
        rows.append(labelled_strip(panels + [('HR', to_uint8(hr.read(key)))]))
    write_png(path, stack_rows(rows))
    return path


def lr_sheet(sources, path, num_keys=2):
    """Per training photo, LR images side by side, enlarged x SCALE (nearest) so that degradations are visible.

    Args:
        sources (list[tuple[str, ImageSource]]): (label, LR source); keys ``<key>`` or ``<key>_v0`` are matched to
            the first source's keys.
    """
    rows = []
    for key in sources[0][1].keys[:num_keys]:
        panels = []
        for i, (label, source) in enumerate(sources):
            name = key if key in source.keys else f'{key}_v0'
            img = to_uint8(source.read(name)).repeat(SCALE, axis=0).repeat(SCALE, axis=1)
            panels.append((f'{label} [{key}]' if i == 0 else label, img))
        rows.append(labelled_strip(panels))
    write_png(path, stack_rows(rows))
    return path
