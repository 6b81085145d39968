"""Stage machinery shared by the quickstart pipelines: photos, LMDBs, YAML templates, training stages, timings.

Every stage of a pipeline writes an LMDB or a checkpoint under OUT and is skipped when that output exists, so a
rerun resumes. Training stages run ``python -m gtplus_models.train --auto_resume`` on a template from
``quickstart/templates/<pipeline>/<name>.yml`` with ``${OUT}`` filled in (written to ``OUT/options/<name>.yml``),
exactly as a user would run them.
"""
import os.path as osp
import subprocess
import sys
import time

import numpy as np

from gtplus_data.atomic_file import atomic_write

TEMPLATES = osp.join(osp.dirname(osp.abspath(__file__)), 'templates')
MIN_PHOTO_SIZE = 128  # the CFMG and ORNet stages train on 128² crops


def logger():
    from basicsr.utils import get_root_logger
    return get_root_logger()


def square_photo(img, size):
    """HxWx3 uint8, or float32 RGB in [0,1] -> size x size float32 [0,1]: area-resize the short side to ``size``,
    centre-crop. (uint8 is resized as uint8, which is what the embedded photos' numbers were measured with.)"""
    import cv2
    height, width = img.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(img, (max(size, round(width * scale)), max(size, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    crop = resized[top:top + size, left:left + size]
    return crop.astype(np.float32) / 255. if crop.dtype == np.uint8 else np.clip(crop, 0, 1).astype(np.float32)


def sample_photos(size):
    """The embedded photos as {name: size x size float32 RGB [0,1]}."""
    from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
    return {name: square_photo(load_sample_photo(name), size) for name in sample_photo_names()}


def write_originals(out, photos_dir=None):
    """With the embedded photos (``photos_dir`` None), write them whole to OUT/photos/ as PNG for the user to look
    at; called once the options are checked, so that a refused run writes nothing."""
    if photos_dir is None:
        from gtplus_data.sample_photos import write_sample_photos
        write_sample_photos(osp.join(out, 'photos'))


def load_photos(size, photos_dir=None):
    """The pipeline's pristine photos: the embedded ones, or every image of a user's folder (or LMDB).

    Args:
        size (int): side of the square crops (short side resized to it, centre-cropped; never upsampled).
        photos_dir (str | None): a folder (or LMDB) of photographs; the key of each is its file stem.

    Returns:
        dict[str, ndarray]: name -> size x size float32 RGB [0,1].

    Raises:
        ValueError: fewer than 2 photos, a name that cannot be an LMDB key, or a photo smaller than ``size``.
    """
    if photos_dir is None:
        return sample_photos(size)
    from gtplus_data.image_source import ImageSource
    from gtplus_data.lmdb_writer import check_key
    source = ImageSource(photos_dir)
    if len(source) < 2:
        raise ValueError(f'--photos {photos_dir}: needs at least 2 photos (one to train on, one to hold out), found '
                         f'{len(source)}')
    photos = {}
    for key in source.keys:
        try:
            check_key(key)
        except ValueError as err:
            raise ValueError(f'--photos: rename {source.describe(key)}: {err}') from None
        img = source.read(key)
        if min(img.shape[:2]) < size:
            raise ValueError(f'--photos: {source.describe(key)} is {img.shape[1]}x{img.shape[0]}, smaller than --size '
                             f'{size}; pass a smaller --size (at least {MIN_PHOTO_SIZE}) or leave the photo out')
        photos[key] = square_photo(img, size)
    return photos


def split_photos(photos, holdout=None, default_holdout=()):
    """Train / held-out split by photo.

    Args:
        photos (dict[str, ndarray]): name -> image.
        holdout (list[str] | None): names to hold out; None: ``default_holdout`` if those names are all present
            (the embedded photos), else every fourth photo in name order (at least one).
        default_holdout (tuple[str]): the pipeline's own choice for the embedded photos.

    Returns:
        tuple[dict, dict]: (train photos, held-out photos).
    """
    names = sorted(photos)
    if holdout:
        unknown = [name for name in holdout if name not in photos]
        if unknown:
            raise ValueError(f'--holdout names no photo: {", ".join(unknown)}; the photos are: {", ".join(names)}')
        held = set(holdout)
    elif default_holdout and set(default_holdout) <= set(names):
        held = set(default_holdout)
    else:
        held = set(names[1::4]) or {names[-1]}
    if len(held) >= len(names):
        raise ValueError(f'--holdout leaves no photo to train on (photos: {", ".join(names)})')
    return ({k: v for k, v in photos.items() if k not in held}, {k: v for k, v in photos.items() if k in held})


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


def template_path(pipeline, name):
    """``quickstart/templates/<pipeline>/<name>.yml``."""
    return osp.join(TEMPLATES, pipeline, f'{name}.yml')


def fill_template(out, pipeline, name):
    """The template of stage ``name`` with ${OUT} replaced, written to OUT/options/<name>.yml; returns that path.

    The written file is complete YAML a user can copy: a header says where it came from and that its paths point
    into OUT; no placeholder is left (a template with another ``${...}`` is refused).
    """
    with open(template_path(pipeline, name)) as f:
        text = f.read().replace('${OUT}', osp.abspath(out))
    if '${' in text:
        raise ValueError(f'{template_path(pipeline, name)} has a placeholder other than ${{OUT}}')
    header = (f'# Written by `gtplus quickstart` from gtplus_models/quickstart/templates/{pipeline}/{name}.yml.\n'
              f'# Its paths point into the quickstart folder {osp.abspath(out)}; copy it and change them for your data.\n')
    text = header + text
    return atomic_write(osp.join(out, 'options', f'{name}.yml'), text)


def network_opt(out, pipeline, name, key='network_g'):
    """The ``key`` network mapping of stage ``name``'s filled template."""
    import yaml
    with open(fill_template(out, pipeline, name)) as f:
        return yaml.safe_load(f)[key]


def latest_weights(out, name, experiment=None):
    """Where ``gtplus train`` leaves the last checkpoint of stage ``name`` (experiment ``quickstart_<name>``, or
    ``experiment``: a variant of the stage that a benchmark trains beside it)."""
    return osp.join(out, 'experiments', experiment or f'quickstart_{name}', 'models', 'net_g_latest.pth')


def load_stage_network(out, pipeline, name, device='cpu'):
    """Stage ``name``'s trained ``network_g``, frozen, in eval mode on ``device``."""
    import torch

    from gtplus_models.checkpoints import build_frozen_network
    return build_frozen_network(network_opt(out, pipeline, name), latest_weights(out, name), f'{name} weights',
                                torch.device(device))


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


def train_stage(out, pipeline, name, iters=None, extra_overrides=(), experiment=None):
    """Run ``gtplus train --auto_resume`` on a filled template in OUT (skipped when its last checkpoint exists).

    Args:
        out (str): the pipeline's output folder (the training runs with it as the current directory).
        pipeline (str): template folder name, e.g. 'enhanced_supervision'.
        name (str): the stage, e.g. 'restorer'.
        iters (int | None): shorten training to this many iterations (a preview).
        extra_overrides (tuple[str]): further ``--force_yml`` entries.
        experiment (str | None): train a variant of the stage under this experiment name (default: the stage's own,
            ``quickstart_<name>``); ``extra_overrides`` then say how it differs.

    Returns:
        str: the last checkpoint.
    """
    weights = latest_weights(out, name, experiment)
    if osp.isfile(weights):
        return weights
    opt_file = fill_template(out, pipeline, name)
    logger().info(f'quickstart: training {experiment or name} ({opt_file})')
    naming = [f'name={experiment}'] if experiment else []
    cmd = train_command(opt_file, iteration_overrides(iters) + naming + list(extra_overrides))
    proc = subprocess.run(cmd, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'quickstart stage {experiment or name} failed:\n{proc.stderr[-3000:]}')
    return weights


class StageTimer:
    """Runs stages and keeps their wall times (seconds, one decimal) for the report."""

    def __init__(self):
        self.start = time.time()
        self.timings = {}

    def __call__(self, stage, fn, *args, **kwargs):
        t0 = time.time()
        result = fn(*args, **kwargs)
        self.timings[stage] = round(time.time() - t0, 1)
        logger().info(f'quickstart: {stage} done in {self.timings[stage]} s')
        return result

    def report(self):
        """{stage: seconds, 'total': seconds}."""
        return dict(self.timings, total=round(time.time() - self.start, 1))
