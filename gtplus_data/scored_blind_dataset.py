"""GTPlusScoredBlindDataset: GT images, their quality scores from ``gtplus score``'s side file, and LQ made online by
CodeFormer's blind degradation (IQPIR stage 2 and the plug-and-play conditioning)."""
import math
import random
from contextlib import contextmanager

import cv2
import numpy as np
import torch
from basicsr.data.degradations import random_add_gaussian_noise, random_add_jpg_compression, random_mixed_kernels
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY

from gtplus_data.dataset_util import KeyedRootsDataset
from gtplus_data.degradations import key_seed
from gtplus_data.image_util import chw_tensor
from gtplus_data.side_file import read_side_payload, side_file_path

# The numbers are CodeFormer's (github.com/sczhou/CodeFormer): 'large' is options/CodeFormer_stage2.yml ("large
# degradation in stageII", repeated as the *_large keys of CodeFormer_stage3.yml; IQPIR trains with it, METHODS.md
# §2); 'small' is options/CodeFormer_stage3.yml ("small degradation in stageIII"). Both use a 41-pixel kernel, half
# isotropic and half anisotropic Gaussians. noise_range is the noise std on the 0-255 scale, jpeg_range the quality.
BLIND_PRESETS = {
    'large': {'blur_kernel_size': 41, 'kernel_list': ['iso', 'aniso'], 'kernel_prob': [0.5, 0.5],
              'blur_sigma': [1, 15], 'downsample_range': [4, 30], 'noise_range': [0, 20], 'jpeg_range': [30, 80]},
    'small': {'blur_kernel_size': 41, 'kernel_list': ['iso', 'aniso'], 'kernel_prob': [0.5, 0.5],
              'blur_sigma': [0.1, 10], 'downsample_range': [1, 12], 'noise_range': [0, 15], 'jpeg_range': [60, 100]},
}


def _check_range(name, value, low=None, high=None, positive=False, strict=False):
    """ValueError naming the YAML key unless ``value`` is [lo, hi] with lo <= hi (lo < hi if ``strict``) inside the
    allowed interval."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
    ok = ok and (value[0] < value[1] if strict else value[0] <= value[1])
    ok = ok and (low is None or value[0] >= low) and (high is None or value[1] <= high)
    if not ok or (positive and value[0] <= 0):
        bounds = f' within [{low}, {high}]' if low is not None or high is not None else ''
        raise ValueError(f'{name} must be [low, high] with low {"<" if strict else "<="} high{bounds}'
                         f'{" and low > 0" if positive else ""}, got {value!r}')
    return [float(value[0]), float(value[1])]


def blind_params(opt):
    """The degradation parameters: the preset named by ``opt['degradation']`` ('large' or 'small', default 'large'),
    each overridden by the YAML key of the same name.

    Args:
        opt (dict): dataset options.

    Returns:
        dict: blur_kernel_size, kernel_list, kernel_prob, blur_sigma, downsample_range, noise_range, jpeg_range
        (the last two may be None: step skipped).
    """
    preset = opt.get('degradation', 'large')
    if preset not in BLIND_PRESETS:
        raise ValueError(f'unknown degradation preset {preset!r}; choose one of {", ".join(BLIND_PRESETS)}')
    params = {name: opt.get(name, default) for name, default in BLIND_PRESETS[preset].items()}
    size = params['blur_kernel_size']
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f'blur_kernel_size must be a positive odd integer, got {size!r}')
    if len(params['kernel_list']) != len(params['kernel_prob']) or not params['kernel_list']:
        raise ValueError(f'kernel_list {params["kernel_list"]} and kernel_prob {params["kernel_prob"]} must be '
                         'non-empty and of one length')
    # basicsr's kernel sampler asserts low < high for the blur sigma (a bare AssertionError in a worker otherwise).
    params['blur_sigma'] = _check_range('blur_sigma', params['blur_sigma'], positive=True, strict=True)
    params['downsample_range'] = _check_range('downsample_range', params['downsample_range'], positive=True)
    if params['noise_range'] is not None:
        params['noise_range'] = _check_range('noise_range', params['noise_range'], low=0)
    if params['jpeg_range'] is not None:
        params['jpeg_range'] = _check_range('jpeg_range', params['jpeg_range'], low=0, high=100)
    return params


def blind_degrade(img, params):
    """CodeFormer's blind degradation (``FFHQBlindDataset``): blur with a random iso/aniso Gaussian kernel, downsample
    by a random factor, add Gaussian noise, JPEG, resize back, round to 8-bit levels.

    The draws come from numpy's and Python's global RNGs, as in basicsr's degradation functions (which this uses).

    Args:
        img (np.ndarray): (H, W, 3) float32 RGB in [0,1] (not modified).
        params (dict): see :func:`blind_params`.

    Returns:
        np.ndarray: (H, W, 3) float32 RGB in [0,1], the GT's size.
    """
    height, width = img.shape[:2]
    # CodeFormer degrades cv2's BGR images, and the JPEG encoder's colour transform assumes BGR: work in that order.
    out = np.ascontiguousarray(img[..., ::-1], dtype=np.float32)
    kernel = random_mixed_kernels(params['kernel_list'], params['kernel_prob'], params['blur_kernel_size'],
                                  params['blur_sigma'], params['blur_sigma'], [-math.pi, math.pi], noise_range=None)
    out = cv2.filter2D(out, -1, kernel)
    scale = np.random.uniform(*params['downsample_range'])
    # CodeFormer's int(size // scale), but at least one pixel, so that small crops survive a x30 factor.
    out = cv2.resize(out, (max(1, int(width // scale)), max(1, int(height // scale))), interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:  # cv2 drops the channel axis of a 1-pixel-wide result
        out = out[..., None].repeat(3, axis=2)
    if params['noise_range'] is not None:
        out = random_add_gaussian_noise(out, params['noise_range'], gray_prob=0, clip=True, rounds=False)
    if params['jpeg_range'] is not None:
        out = random_add_jpg_compression(out, params['jpeg_range'])
    out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[..., None].repeat(3, axis=2)
    # As CodeFormer: the LQ input holds 8-bit levels, like a real photograph.
    out = np.clip((out * 255.).round(), 0, 255) / 255.
    return np.ascontiguousarray(out[..., ::-1], dtype=np.float32)


@contextmanager
def seeded_global_rngs(seed):
    """Seed numpy's and Python's global RNGs (the ones basicsr's degradations and augment draw from) for the block,
    then restore their states, so that a fixed-seed sample leaves the caller's random streams untouched."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def load_scores(root, keys, score_file='quality_scores', score_name='ensemble', normalise=None,
                higher_is_better=None, score_bounds=None):
    """Per-key scores in [0, 1] (1 = best) from the side file ``root/<score_file>.json`` written by ``gtplus score``
    (layout: :mod:`gtplus_models.tools.scoring`).

    Args:
        root (str): the LMDB or image folder holding the side file.
        keys (list[str]): the dataset's keys; each needs a score.
        score_file (str): side file stem.
        score_name (str): record field: a metric ('niqe', raw units) or 'ensemble' (IQPIR's score, already [0,1]).
        normalise (bool | None): min-max normalise over ``keys`` (True), or take the scores as they are, which must
            then lie in [0, 1] (False). None: False for 'ensemble', True for a raw metric.
        higher_is_better (bool | None): the metric's direction; None reads it from the side file's
            ``metrics[score_name].lower_better`` ('ensemble': higher is better). Lower-is-better scores are flipped.
        score_bounds (list[float] | None): [min, max] in raw units to normalise with instead of this dataset's own
            (e.g. a validation set normalised like its training set); scores outside are clipped.

    Returns:
        dict[str, float]: key -> score in [0, 1].

    Raises:
        ValueError: one line naming the file and key: missing file, missing or non-numeric score, a score outside
            [0, 1] with ``normalise: false``, or an unknown direction.
    """
    path = side_file_path(root, score_file)
    try:
        payload = read_side_payload(path)
    except FileNotFoundError:
        raise ValueError(f'score side file not found: {path} (write it with `gtplus score {root} --metrics niqe`)'
                         ) from None
    records = payload.get('records', {})
    missing = [key for key in keys if records.get(key, {}).get(score_name) is None]
    if missing:
        more = f' (+{len(missing) - 10} more)' if len(missing) > 10 else ''
        # `gtplus score` writes 'ensemble' only with --ensemble: name what the file does hold.
        fields = sorted({field for record in records.values() for field in record})
        raise ValueError(f'{len(missing)} key(s) have no {score_name!r} score in {path}: {", ".join(missing[:10])}'
                         f'{more} (fields recorded: {", ".join(fields) or "none"}; see score_name)')
    raw = {}
    for key in keys:
        value = records[key][score_name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f'{path}: the {score_name!r} score of key {key} is {value!r}, not a finite number')
        raw[key] = float(value)
    if normalise is None:
        normalise = score_name != 'ensemble'
    if not normalise:
        outside = [key for key in keys if not 0. <= raw[key] <= 1.]
        if outside:
            raise ValueError(f'{path}: the {score_name!r} score of key {outside[0]} is {raw[outside[0]]}, outside '
                             f'[0, 1] ({len(outside)} key(s) outside); set normalise: true to min-max normalise it')
        return raw
    if higher_is_better is None:
        if score_name == 'ensemble':
            higher_is_better = True
        else:
            lower_better = (payload.get('metrics') or {}).get(score_name, {}).get('lower_better')
            if lower_better is None:
                raise ValueError(f'{path} does not record whether {score_name!r} is better high or low: set '
                                 'higher_is_better')
            higher_is_better = not lower_better
    values = np.array([raw[key] for key in keys], dtype=np.float64)
    low, high = score_bounds if score_bounds is not None else (values.min(), values.max())
    # As the ensemble (gtplus_models.quality.normalise_scores): a metric that does not vary carries no ranking: 0.5.
    unit = np.full_like(values, 0.5) if high <= low else np.clip((values - low) / (high - low), 0., 1.)
    unit = unit if higher_is_better else 1. - unit
    return {key: float(value) for key, value in zip(keys, unit)}


def resize_image(img, size):
    """(H, W, 3) float32 RGB [0,1] -> (h, w, 3) for ``size`` = (h, w): area-averaged when shrinking (no aliasing,
    e.g. FFHQ 1024 -> 512), bicubic when enlarging, clipped to [0,1]."""
    height, width = size
    if (height, width) == img.shape[:2]:
        return img
    shrink = height <= img.shape[0] and width <= img.shape[1]
    out = cv2.resize(np.ascontiguousarray(img), (width, height),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0, 1).astype(np.float32)


@DATASET_REGISTRY.register()
class GTPlusScoredBlindDataset(KeyedRootsDataset):
    """GT images with their quality scores, and LQ inputs made on the fly by CodeFormer's blind degradation.

    Per item: the GT is read (LMDB or folder), cropped to ``gt_size`` if given (train phase; general images), flipped
    (``use_hflip``, default true as in CodeFormer; ``use_rot``), resized to ``out_size`` if given (e.g. FFHQ 1024 ->
    512), and degraded into the LQ (:func:`blind_degrade`). Unlike CodeFormer, nothing is normalised to [-1, 1]:
    images leave the dataset in [0,1], and networks convert inside themselves.

    Randomness: with ``seed: null`` (the train-phase default) the draws come from numpy's and Python's global RNGs,
    as in basicsr and CodeFormer; basicsr's dataloader seeds them per worker from ``manual_seed``, so a seeded run
    is reproducible and every epoch sees new degradations. With an integer ``seed`` (default 0 outside the train
    phase) every item is drawn under its own seed ``key_seed(seed, key)``: a validation set then holds the same LQ
    at every evaluation, whatever the order, and the caller's RNG states are left as they were.

    Args:
        opt (dict): ``dataroot_gt`` (LMDB or folder with the side file of ``gtplus score``), ``io_backend``,
            ``phase``, ``gt_size``, ``use_hflip``, ``use_rot``, ``out_size`` (int or [h, w], optional), ``seed``;
            the degradation: ``degradation`` ('large' or 'small', see ``BLIND_PRESETS``) and any of its keys
            (``blur_kernel_size``, ``kernel_list``, ``kernel_prob``, ``blur_sigma``, ``downsample_range``,
            ``noise_range``, ``jpeg_range``) to override the preset; the scores: ``score_file``
            (default 'quality_scores'), ``score_name`` (default 'ensemble'), ``normalise``, ``higher_is_better``,
            ``score_bounds`` (see :func:`load_scores`).

    Returns (per item):
        dict: ``lq`` and ``gt`` Tensor[3, H, W] RGB [0,1] of one size; ``score`` Tensor[] float32 in [0,1],
        1 = best; ``gt_path``.
    """

    def __init__(self, opt):
        opt = {'use_hflip': True, **opt}
        super().__init__(opt, {'gt': opt['dataroot_gt']})
        self.degradation = blind_params(opt)
        out_size = opt.get('out_size')
        self.out_size = (out_size, out_size) if isinstance(out_size, int) else (tuple(out_size) if out_size else None)
        self.seed = opt.get('seed', None if opt.get('phase') == 'train' else 0)
        self.scores = load_scores(opt['dataroot_gt'], self.keys, opt.get('score_file', 'quality_scores'),
                                  opt.get('score_name', 'ensemble'), opt.get('normalise'), opt.get('higher_is_better'),
                                  opt.get('score_bounds'))
        get_root_logger().info(f'{type(self).__name__} {opt["dataroot_gt"]}: {len(self.keys)} images, degradation '
                               f'{opt.get("degradation", "large")} {self.degradation}')

    def __getitem__(self, index):
        key = self.keys[index]
        if self.seed is None:
            return self._sample(key)
        with seeded_global_rngs(key_seed(self.seed, key)):
            return self._sample(key)

    def _sample(self, key):
        path = self.path_of('gt', key)
        (gt, ), _ = self.load(key, ['gt'], path=path)
        if self.out_size:
            gt = resize_image(gt, self.out_size)
        lq = blind_degrade(gt, self.degradation)
        score = torch.tensor(self.scores[key], dtype=torch.float32)
        return {'lq': chw_tensor(lq), 'gt': chw_tensor(gt), 'score': score, 'gt_path': path}
