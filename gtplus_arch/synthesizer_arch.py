"""Degradation synthesizers: an HR batch in, the LQ batch out, every random choice drawn from a ``torch.Generator``.

A synthesizer is one registered module that serves both online training (a model's ``feed_data``, batched on the
model's device, as Real-ESRGAN synthesizes its pairs) and the offline ``gtplus synthesize`` tool. The contract
(:class:`Synthesizer`):

- ``forward(hr, generator=None)``: ``hr`` is Tensor[B,3,H,W], RGB in [0,1], on any device, H and W multiples of
  ``scale``; returns Tensor[B,3,H/scale,W/scale], RGB in [0,1], same dtype and device.
- Randomness: every draw comes from ``generator``. A generator may live on another device than the input (draws
  are made there and moved; one on the input's device avoids the copies of image-sized noise). With
  ``generator=None`` the draws come from torch's global RNG of the input's device, as ``torch.rand(...)`` without
  a generator does: BasicSR's ``manual_seed`` then makes training reproducible, and a tool passes an explicit
  generator. A synthesizer never touches ``random`` or ``numpy.random``.
- ``provenance()``: the JSON-able option mapping that rebuilt it (``build_synthesizer(s.provenance())``), written
  beside synthesized data in the side file.
- Synthesizers compose: an option mapping ``{'type': ..., ...}`` (e.g. a ``first_stage`` key) becomes a
  synthesizer through :func:`build_synthesizer`, which looks the type up in ARCH_REGISTRY.
"""
import copy
import dataclasses
import difflib
import functools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D
from basicsr.utils.matlab_functions import calculate_weights_indices
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torchvision.transforms.functional import rgb_to_grayscale

# ------------------------------------------------------------------------------------------------------------ #
# Random draws
# ------------------------------------------------------------------------------------------------------------ #


def _draw_device(generator, device):
    """Where draws are made: the generator's device, or (no generator: torch's global RNG) the data's."""
    return generator.device if generator is not None else torch.device(device)


def _rand(generator, device, *shape, dtype=torch.float32):
    """U[0,1) of ``shape`` from ``generator`` (None: the global RNG of ``device``), returned on ``device``."""
    return torch.rand(*shape, generator=generator, device=_draw_device(generator, device), dtype=dtype).to(device)


def _randn(generator, device, *shape):
    return torch.randn(*shape, generator=generator, device=_draw_device(generator, device)).to(device)


def _uniform(generator, device, count, low, high):
    """``count`` draws of U[low, high) made as ``Tensor.uniform_`` makes them (basicsr's JPEG qualities)."""
    values = torch.zeros(count, device=_draw_device(generator, device)).uniform_(low, high, generator=generator)
    return values.to(device)


def _poisson(generator, rates):
    return torch.poisson(rates.to(_draw_device(generator, rates.device)), generator=generator).to(rates.device)


# ------------------------------------------------------------------------------------------------------------ #
# The interface
# ------------------------------------------------------------------------------------------------------------ #


def quantize_8bit(x):
    """Clamp to [0,1] and round to the 256 levels a PNG holds, exactly as basicsr's RealESRGANModel rounds its LQ."""
    return torch.clamp((x * 255.0).round(), 0, 255) / 255.


def build_synthesizer(opt):
    """Build a synthesizer from an option mapping (a YAML block) through ARCH_REGISTRY.

    Args:
        opt (Mapping | Synthesizer): ``{'type': <registered Synthesizer class>, <constructor keyword>: value, ...}``,
            e.g. a ``first_stage`` option or a ``provenance()``; a Synthesizer instance is returned as it is.

    Returns:
        Synthesizer: a new module on the CPU (it follows its input's device when called).
    """
    if isinstance(opt, Synthesizer):
        return opt
    if not isinstance(opt, Mapping) or 'type' not in opt:
        raise ValueError(f"A synthesizer option needs a 'type' key naming a registered synthesizer, got {opt!r}")
    kwargs = dict(opt)
    name = kwargs.pop('type')
    cls = ARCH_REGISTRY.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Synthesizer)):
        raise ValueError(f"'{name}' is registered in ARCH_REGISTRY but is not a Synthesizer (HR batch in, LQ out)")
    return cls(**kwargs)


def build_first_stage(first_stage, scale, default, owner):
    """The first stage of a composed synthesizer: a block (its ``scale`` defaulting to ``scale``), a built
    Synthesizer, or None for ``default``; its scale must equal ``scale``.

    Args:
        first_stage (dict | Synthesizer | None): what the YAML gave.
        scale (int): the composed synthesizer's scale.
        default (dict): the block used when ``first_stage`` is None.
        owner (str): the composed synthesizer's class name, for the error.
    """
    stage = dict(first_stage) if isinstance(first_stage, Mapping) else first_stage
    if stage is None:
        stage = dict(default)
    if isinstance(stage, dict):
        stage = {'scale': scale, **stage}
    built = build_synthesizer(stage)
    if built.scale != scale:
        raise ValueError(f'{owner}: first_stage ({type(built).__name__}) has scale {built.scale}, but scale is '
                         f'{scale}; they must be equal')
    return built


class Synthesizer(nn.Module):
    """Base of the degradation synthesizers (see the module docstring for the contract).

    A subclass implements ``forward(hr, generator=None)``, starting with :meth:`check_input` and ending with
    :meth:`finish`, and extends :meth:`options` with its own constructor keywords.

    Args:
        scale (int): HR size / LQ size, >= 1.
        round_output (bool): round the LQ to 8-bit levels (k/255), as basicsr's Real-ESRGAN chain does and as a PNG
            stores it, so online and offline (LMDB) pairs agree; False keeps the float values (clamped to [0,1]).
    """

    def __init__(self, scale=4, round_output=True):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f'{type(self).__name__}: scale must be a positive integer, got {scale!r}')
        self.scale = scale
        self.round_output = bool(round_output)

    def forward(self, hr, generator=None):
        """
        Args:
            hr (Tensor): [B,3,H,W] RGB in [0,1], H and W multiples of ``scale``.
            generator (torch.Generator | None): the source of every random draw (None: torch's global RNG of
                ``hr``'s device).

        Returns:
            Tensor: [B,3,H/scale,W/scale] RGB in [0,1], ``hr``'s dtype and device.
        """
        raise NotImplementedError

    def min_size(self):
        """The smallest HR side (a multiple of ``scale``) this synthesizer can degrade."""
        return self.scale

    def check_input(self, hr):
        """Raise ValueError unless ``hr`` is an RGB batch [B,3,H,W] whose sides are multiples of ``scale``."""
        name = type(self).__name__
        if not torch.is_tensor(hr) or hr.dim() != 4 or hr.size(1) != 3:
            shape = tuple(hr.shape) if torch.is_tensor(hr) else type(hr).__name__
            raise ValueError(f'{name} expects an RGB batch Tensor[B,3,H,W], got {shape}')
        height, width = hr.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f'{name}: the HR size {height}x{width} is not a multiple of scale {self.scale}; crop it '
                             f'to {height // self.scale * self.scale}x{width // self.scale * self.scale} first')
        if min(height, width) < self.min_size():
            raise ValueError(f'{name}: the HR size {height}x{width} is too small; with these options each side must '
                             f'be at least {self.min_size()}')

    def finish(self, lq, dtype):
        """The last step of every synthesizer: cast to ``dtype``, clamp to [0,1], round if ``round_output`` (in
        ``dtype``, so that a float64 LQ holds exact k/255 values too)."""
        lq = lq.to(dtype)
        return quantize_8bit(lq) if self.round_output else lq.clamp(0, 1)

    def weights_module(self):
        """The submodule a weights file (a reconstruction snapshot, a trained degradation network) loads into, or
        None for a synthesizer with nothing learned (bicubic, Real-ESRGAN). See
        :func:`gtplus_models.synthesis.load_synthesizer`."""
        return None

    def options(self):
        """The constructor keywords that rebuild this synthesizer (JSON-able values); subclasses extend it."""
        return {'scale': self.scale, 'round_output': self.round_output}

    def provenance(self):
        """What made the data, for the side file: ``{'type': class name, **options()}``, JSON-able, and a valid
        option mapping for :func:`build_synthesizer`."""
        return {'type': type(self).__name__, **self.options()}

    def extra_repr(self):
        return ', '.join(f'{key}={value!r}' for key, value in self.options().items())


# ------------------------------------------------------------------------------------------------------------ #
# Bicubic
# ------------------------------------------------------------------------------------------------------------ #

BICUBIC_METHODS = ('matlab', 'torch')


@functools.lru_cache(maxsize=64)
def matlab_bicubic_matrix(length, scale):
    """The [length/scale, length] matrix of MATLAB's ``imresize(x, 1/scale)`` (bicubic, antialiased) along one axis.

    The weights are basicsr's :func:`~basicsr.utils.matlab_functions.calculate_weights_indices`; the taps that fall
    outside the image are folded back with MATLAB's symmetric border (edge sample repeated), which is what
    basicsr's per-image ``imresize`` does by padding. As a matrix, a batch resizes in two matmuls on any device.

    Args:
        length (int): input length, a multiple of ``scale``.
        scale (int): downscaling factor.

    Returns:
        Tensor: [length // scale, length] float32 on the CPU; rows sum to 1.
    """
    out_length = length // scale
    weights, indices, sym_len_start, _ = calculate_weights_indices(length, out_length, 1 / scale, 'cubic', 4, True)
    source = indices.long() - sym_len_start
    # Symmetric extension, repeated for images smaller than the kernel: period 2*length, mirrored second half.
    source = source % (2 * length)
    source = torch.where(source >= length, 2 * length - 1 - source, source)
    return torch.zeros(out_length, length).scatter_add_(1, source, weights.float())


@ARCH_REGISTRY.register()
class BicubicSynthesizer(Synthesizer):
    """The baseline: bicubic downscaling, deterministic (``generator`` is accepted and unused).

    ``method='matlab'`` (default) is MATLAB's ``imresize`` (antialiased Keys bicubic, a = -0.5, symmetric border):
    how DIV2K's and BasicSR's bicubic LR sets are made (``basicsr.utils.matlab_functions.imresize``), so a model
    trained on these pairs sees the LR those test sets hold. It equals basicsr's ``imresize`` up to float rounding,
    batched on the input's device. ``method='torch'`` is ``F.interpolate(mode='bicubic', antialias=True)`` (PIL's
    filter): the same kernel, equal inside, but it renormalises the taps at the border instead of mirroring, so
    the outer three LR pixels differ (by up to ~0.03 on noise).

    Args:
        scale (int): downscaling factor.
        method (str): 'matlab' or 'torch'.
        round_output (bool): round to 8-bit levels, as an LR PNG holds them.
    """

    def __init__(self, scale=4, method='matlab', round_output=True):
        super().__init__(scale, round_output)
        if method not in BICUBIC_METHODS:
            raise ValueError(f"BicubicSynthesizer method must be one of {', '.join(BICUBIC_METHODS)}, got {method!r}")
        self.method = method

    def options(self):
        return {**super().options(), 'method': self.method}

    @torch.no_grad()
    def forward(self, hr, generator=None):
        """Tensor[B,3,H,W] RGB in [0,1] -> Tensor[B,3,H/scale,W/scale] RGB in [0,1] (``generator`` unused)."""
        self.check_input(hr)
        height, width = hr.shape[-2:]
        x = hr.float()
        if self.method == 'matlab':
            rows = matlab_bicubic_matrix(height, self.scale).to(x.device)
            cols = matlab_bicubic_matrix(width, self.scale).to(x.device)
            out = rows @ x @ cols.t()
        else:
            out = F.interpolate(x, size=(height // self.scale, width // self.scale), mode='bicubic',
                                align_corners=False, antialias=True)
        return self.finish(out, hr.dtype)


# ------------------------------------------------------------------------------------------------------------ #
# Blur kernels: basicsr's kernel formulas, batched in torch
# ------------------------------------------------------------------------------------------------------------ #

# basicsr's kernel type names, in this order: index // 2 is the family (0 Gaussian, 1 generalized Gaussian,
# 2 plateau), index % 2 == 0 is isotropic.
KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')


def _kernel_grid(kernel_size, device):
    """x (column) and y (row) offsets from the centre of a kernel_size^2 grid, float64 (basicsr's mesh_grid)."""
    offsets = torch.arange(kernel_size, dtype=torch.float64, device=device) - kernel_size // 2
    y, x = torch.meshgrid(offsets, offsets, indexing='ij')
    return x, y


def _windowed_and_normalised(kernels, sizes, x, y):
    """Zero each kernel outside its centred sizes[i]^2 window, then make it sum to 1 (basicsr builds the kernel at
    its own size, normalises it, then zero-pads to 21: the same numbers)."""
    half = (sizes // 2).view(-1, 1, 1)
    kernels = kernels * ((x.abs() <= half) & (y.abs() <= half))
    return kernels / kernels.sum(dim=(-2, -1), keepdim=True)


def bivariate_kernels(family, sizes, sigma_x, sigma_y, theta, beta, kernel_size):
    """A batch of basicsr's ``bivariate_Gaussian`` / ``bivariate_generalized_Gaussian`` / ``bivariate_plateau``.

    Args:
        family (Tensor[B] long): 0 Gaussian ``exp(-Q/2)``, 1 generalized ``exp(-Q^beta/2)``, 2 plateau
            ``1/(Q^beta + 1)``, where ``Q = [x y] Sigma^-1 [x y]^T`` and ``Sigma = R(theta) diag(sx^2, sy^2) R^T``.
        sizes (Tensor[B] long): odd kernel sizes <= kernel_size.
        sigma_x, sigma_y, theta, beta (Tensor[B] float64): isotropic kernels pass sigma_y = sigma_x, theta = 0.
        kernel_size (int): odd size every kernel is zero-padded to.

    Returns:
        Tensor: [B,kernel_size,kernel_size] float64, each summing to 1, zero outside its size.
    """
    x, y = _kernel_grid(kernel_size, sigma_x.device)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    inv_x2, inv_y2 = (1 / sigma_x**2).view(-1, 1, 1), (1 / sigma_y**2).view(-1, 1, 1)
    # Sigma^-1 = R diag(1/sx^2, 1/sy^2) R^T, written out.
    a = cos**2 * inv_x2 + sin**2 * inv_y2
    b = cos * sin * (inv_x2 - inv_y2)
    c = sin**2 * inv_x2 + cos**2 * inv_y2
    quad = a * x**2 + 2 * b * x * y + c * y**2
    powered = quad.clamp_min(0)**beta.view(-1, 1, 1)
    family = family.view(-1, 1, 1)
    kernels = torch.where(family == 0, torch.exp(-0.5 * quad),
                          torch.where(family == 1, torch.exp(-0.5 * powered), 1 / (powered + 1)))
    return _windowed_and_normalised(kernels, sizes, x, y)


def sinc_kernels(omega, sizes, kernel_size):
    """A batch of basicsr's ``circular_lowpass_kernel`` (2-D sinc: ``omega J1(omega r) / (2 pi r)``).

    Args:
        omega (Tensor[B] float64): cutoff frequencies in radians (pi is the Nyquist frequency).
        sizes (Tensor[B] long): odd kernel sizes <= kernel_size.
        kernel_size (int): odd size every kernel is zero-padded to.

    Returns:
        Tensor: [B,kernel_size,kernel_size] float64, each summing to 1, zero outside its size.
    """
    x, y = _kernel_grid(kernel_size, omega.device)
    radius = torch.sqrt(x**2 + y**2)
    safe_radius = torch.where(radius == 0, torch.ones_like(radius), radius)
    omega = omega.view(-1, 1, 1)
    kernels = omega * torch.special.bessel_j1(omega * safe_radius) / (2 * math.pi * safe_radius)
    kernels = torch.where(radius == 0, omega**2 / (4 * math.pi), kernels)  # the limit at r = 0
    return _windowed_and_normalised(kernels, sizes, x, y)


# ------------------------------------------------------------------------------------------------------------ #
# Real-ESRGAN's second-order degradation
# ------------------------------------------------------------------------------------------------------------ #

RESIZE_MODES = ('area', 'bilinear', 'bicubic')

_KERNEL_TYPES_ALL = list(KERNEL_TYPES)
# BasicSR's options/train/RealESRGAN/train_realesrgan_x4plus.yml: the model keys, then the dataset's kernel keys.
_REALESRGAN = {
    'resize_prob': [0.2, 0.7, 0.1],  # up, down, keep
    'resize_range': [0.15, 1.5],
    'gaussian_noise_prob': 0.5,
    'noise_range': [1, 30],
    'poisson_scale_range': [0.05, 3],
    'gray_noise_prob': 0.4,
    'jpeg_range': [30, 95],
    'second_blur_prob': 0.8,
    'resize_prob2': [0.3, 0.4, 0.3],
    'resize_range2': [0.3, 1.2],
    'gaussian_noise_prob2': 0.5,
    'noise_range2': [1, 25],
    'poisson_scale_range2': [0.05, 2.5],
    'gray_noise_prob2': 0.4,
    'jpeg_range2': [30, 95],
    'blur_kernel_size': 21,
    'kernel_list': _KERNEL_TYPES_ALL,
    'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    'sinc_prob': 0.1,
    'blur_sigma': [0.2, 3],
    'betag_range': [0.5, 4],
    'betap_range': [1, 2],
    'blur_kernel_size2': 21,
    'kernel_list2': _KERNEL_TYPES_ALL,
    'kernel_prob2': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    'sinc_prob2': 0.1,
    'blur_sigma2': [0.2, 1.5],
    'betag_range2': [0.5, 4],
    'betap_range2': [1, 2],
    'final_sinc_prob': 0.8,
    'use_usm': True,  # feed_data degrades the USM-sharpened GT
    'round_output': True,  # feed_data rounds the LQ to 8 bits
}
# StableSR (IceClear/StableSR configs/stableSRNew/v2-finetune_text_T_512.yaml, `degradation` and the dataset keys),
# the lighter chain of METHODS.md section 4. Its YAML sets blur_kernel_size2: 11, but its dataset (a copy of
# basicsr's RealESRGANDataset) draws kernel sizes 7..21 whatever that key says, so 21 reproduces what it trained on.
# Its get_input sharpens the GT first (use_usm: True) and clamps the LQ without rounding. Left out: its
# no_degradation_prob (1%: the LQ replaced by the GT itself, at GT size) has no LQ-size counterpart.
_STABLESR = {
    **_REALESRGAN,
    'resize_range': [0.3, 1.5],
    'noise_range': [1, 15],
    'poisson_scale_range': [0.05, 2.0],
    'jpeg_range': [60, 95],
    'second_blur_prob': 0.5,
    'resize_range2': [0.6, 1.2],
    'noise_range2': [1, 12],
    'poisson_scale_range2': [0.05, 1.0],
    'jpeg_range2': [60, 100],
    'blur_sigma': [0.2, 1.5],
    'betag_range': [0.5, 2.0],
    'betap_range': [1, 1.5],
    'blur_sigma2': [0.2, 1.0],
    'betag_range2': [0.5, 2.0],
    'betap_range2': [1, 1.5],
    'round_output': False,
}
REALESRGAN_PRESETS = {'realesrgan': _REALESRGAN, 'stablesr': _STABLESR}

_PROB_KEYS = ('gaussian_noise_prob', 'gray_noise_prob', 'second_blur_prob', 'gaussian_noise_prob2',
              'gray_noise_prob2', 'sinc_prob', 'sinc_prob2', 'final_sinc_prob')
# range key -> (low may be 0, largest high, must contain 1). Noise may be 0; a resize factor, blur sigma, beta or JPEG
# quality may not. Resize factors are drawn in [low, 1) or [1, high) and the kernel betas likewise, so 1 must lie
# inside those ranges.
_RANGE_KEYS = {
    'resize_range': (False, math.inf, True), 'resize_range2': (False, math.inf, True),
    'noise_range': (True, math.inf, False), 'noise_range2': (True, math.inf, False),
    'poisson_scale_range': (True, math.inf, False), 'poisson_scale_range2': (True, math.inf, False),
    'jpeg_range': (False, 100, False), 'jpeg_range2': (False, 100, False),
    'blur_sigma': (False, math.inf, False), 'blur_sigma2': (False, math.inf, False),
    'betag_range': (False, math.inf, True), 'betag_range2': (False, math.inf, True),
    'betap_range': (False, math.inf, True), 'betap_range2': (False, math.inf, True),
}
_USM_RADIUS = 51  # basicsr's USMSharp() default radius 50, made odd


def _check_params(params):
    """Raise ValueError naming the first bad RealESRGANSynthesizer option; returns JSON-able copies."""
    checked = {}
    for key, value in params.items():
        if key in _PROB_KEYS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f'RealESRGANSynthesizer {key} must be a probability in [0, 1], got {value!r}')
            value = float(value)
        elif key in _RANGE_KEYS:
            zero_ok, high, contains_one = _RANGE_KEYS[key]
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or not 0 <= value[0] <= value[1] <= high or (value[0] == 0 and not zero_ok)
                    or (contains_one and not value[0] <= 1 <= value[1])):
                bounds = f"0 {'<=' if zero_ok else '<'} low <= {'1 <= ' if contains_one else ''}high" + (
                    f' <= {high}' if high < math.inf else '')
                raise ValueError(f'RealESRGANSynthesizer {key} must be [low, high] with {bounds}, got {value!r}')
            value = [float(v) for v in value]
        elif key in ('resize_prob', 'resize_prob2', 'kernel_prob', 'kernel_prob2'):
            if (not isinstance(value, (list, tuple)) or not value or any(v < 0 for v in value)
                    or sum(value) <= 0):
                raise ValueError(f'RealESRGANSynthesizer {key} must be non-negative weights with a positive sum, '
                                 f'got {value!r}')
            value = [float(v) for v in value]
        elif key in ('kernel_list', 'kernel_list2'):
            unknown = [name for name in value if name not in KERNEL_TYPES] if isinstance(value, (list, tuple)) else 0
            if unknown or not value:
                raise ValueError(f'RealESRGANSynthesizer {key} must list kernel types from {", ".join(KERNEL_TYPES)}'
                                 f', got {value!r}')
            value = list(value)
        elif key in ('blur_kernel_size', 'blur_kernel_size2'):
            if isinstance(value, bool) or not isinstance(value, int) or value < 7 or value % 2 == 0:
                raise ValueError(f'RealESRGANSynthesizer {key} must be an odd integer >= 7, got {value!r}')
        elif key in ('use_usm', 'round_output'):
            if not isinstance(value, bool):
                raise ValueError(f'RealESRGANSynthesizer {key} must be true or false, got {value!r}')
        checked[key] = value
    for suffix in ('', '2'):
        if len(checked['resize_prob' + suffix]) != 3:
            raise ValueError(f'RealESRGANSynthesizer resize_prob{suffix} needs 3 weights (up, down, keep), got '
                             f'{checked["resize_prob" + suffix]!r}')
        if len(checked['kernel_prob' + suffix]) != len(checked['kernel_list' + suffix]):
            raise ValueError(f'RealESRGANSynthesizer kernel_prob{suffix} needs one weight per kernel_list{suffix} '
                             f'entry, got {checked["kernel_prob" + suffix]!r} for {checked["kernel_list" + suffix]!r}')
    return checked


@dataclasses.dataclass(frozen=True)
class DegradationPlan:
    """The per-batch choices of one Real-ESRGAN degradation: what ``RealESRGANModel.feed_data`` draws with
    ``random`` and ``numpy.random`` (one value for the whole batch, since a batch must keep one size).

    Attributes:
        scale1 (float): first resize factor (> 1 up, < 1 down, 1 keep).
        mode1 (str): first resize mode, one of RESIZE_MODES.
        gaussian1 (bool): first noise: True Gaussian, False Poisson.
        blur2 (bool): apply the second blur.
        scale2 (float): second resize factor, relative to the LQ size.
        mode2 (str): second resize mode.
        gaussian2 (bool): second noise: True Gaussian, False Poisson.
        resize_first (bool): True: [resize to LQ size + sinc] then JPEG; False: JPEG then [resize + sinc].
        mode3 (str): mode of the final resize to the LQ size.
    """
    scale1: float
    mode1: str
    gaussian1: bool
    blur2: bool
    scale2: float
    mode2: str
    gaussian2: bool
    resize_first: bool
    mode3: str

    def basicsr_draws(self):
        """What feed_data's ``random.choices``, ``random.choice`` and ``np.random.uniform`` calls must return, in
        call order, to make this plan (a uniform of 0 takes a ``< prob`` branch, 1 the other).

        Returns:
            dict[str, list]: 'choices' (resize types 'up'/'down'/'keep'), 'choice' (the three modes), 'uniform'
            (resize factors, drawn only for 'up'/'down', and the branch draws).
        """
        kind = [('up' if s > 1 else 'down' if s < 1 else 'keep') for s in (self.scale1, self.scale2)]
        uniform = ([self.scale1] if kind[0] != 'keep' else []) + [float(not self.gaussian1), float(not self.blur2)]
        uniform += ([self.scale2] if kind[1] != 'keep' else []) + [float(not self.gaussian2),
                                                                    float(not self.resize_first)]
        return {'choices': kind, 'choice': [self.mode1, self.mode2, self.mode3], 'uniform': uniform}


def _choose(weights, u):
    """``random.choices(range(len(weights)), weights)`` for a uniform ``u``: the first cumulative weight above
    u * total."""
    total, running = sum(weights), 0.
    for index, weight in enumerate(weights):
        running += weight
        if u * total < running:
            return index
    return len(weights) - 1


def _resize_factor(weights, value_range, u_type, u_value):
    """basicsr's resize factor: up U[1, high), down U[low, 1), keep 1, chosen with ``weights``."""
    kind = _choose(weights, u_type)
    if kind == 0:
        return 1 + (value_range[1] - 1) * u_value
    if kind == 1:
        return value_range[0] + (1 - value_range[0]) * u_value
    return 1.


@ARCH_REGISTRY.register()
class RealESRGANSynthesizer(Synthesizer):
    """Real-ESRGAN's second-order degradation, as basicsr's ``RealESRGANModel.feed_data`` runs it, self-contained.

    The chain (basicsr's own ``USMSharp``, ``filter2D`` and ``DiffJPEG``; its noise functions mirrored so that they
    draw from the generator): [USM-sharpen the HR] -> blur (kernel1) -> resize (up/down/keep, area/bilinear/bicubic)
    -> Gaussian or Poisson noise (colour or gray per sample) -> JPEG (quality per sample) -> [blur (kernel2)] ->
    resize to LQ size x scale2 -> noise -> in random order {resize to LQ size + final sinc (sinc_kernel)} and JPEG
    -> clamp and round to 8 bits. BasicSR draws the three kernels per sample in the dataset (numpy); here they are
    drawn in the module, batched, from the generator (:meth:`draw_kernels`), and so are the per-batch choices that
    feed_data draws with ``random``/``numpy.random`` (:meth:`draw_plan`). What feed_data does after the LQ exists
    (the paired random crop to gt_size, the training-pair queue, the GT sharpening for the losses) belongs to the
    model, not to the synthesizer.

    ``forward(hr, g)`` is exactly ``degrade(hr, *draw_kernels(B, g), draw_plan(g), g)``: kernels, then the plan,
    then the noise and JPEG draws, all from ``g`` in that order.

    Args:
        scale (int): HR size / LQ size.
        preset (str): 'realesrgan' (BasicSR's train_realesrgan_x4plus.yml) or 'stablesr' (StableSR's lighter chain);
            see ``REALESRGAN_PRESETS``.
        **params: any preset key, to override it (the YAML keys of basicsr's RealESRGANModel and RealESRGANDataset):
            first degradation ``resize_prob`` [up, down, keep], ``resize_range``, ``gaussian_noise_prob``,
            ``noise_range`` (sigma in 8-bit levels), ``poisson_scale_range``, ``gray_noise_prob``, ``jpeg_range``;
            second degradation ``second_blur_prob`` and the same keys with a ``2`` suffix; kernels
            ``blur_kernel_size`` (odd, >= 7: kernel sizes are drawn from 7, 9, ..., blur_kernel_size, then zero-padded
            to it; basicsr reads the key but hard-codes 7..21, which 21 reproduces), ``kernel_list``, ``kernel_prob``,
            ``sinc_prob``, ``blur_sigma``, ``betag_range``, ``betap_range``, the same with ``2`` for kernel2, and
            ``final_sinc_prob`` (the final sinc uses blur_kernel_size's sizes, as basicsr shares one size list);
            ``use_usm`` (degrade the USM-sharpened HR, as feed_data does) and ``round_output`` (8-bit LQ).
    """

    def __init__(self, scale=4, preset='realesrgan', **params):
        if preset not in REALESRGAN_PRESETS:
            raise ValueError(f"Unknown RealESRGANSynthesizer preset '{preset}'; choose from "
                             f"{', '.join(sorted(REALESRGAN_PRESETS))}")
        merged = dict(REALESRGAN_PRESETS[preset])
        for key in params:
            if key not in merged:
                close = difflib.get_close_matches(key, list(merged), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ''
                raise ValueError(f"RealESRGANSynthesizer has no parameter '{key}'{hint}; its parameters are "
                                 f"scale, preset and {', '.join(sorted(merged))}")
        merged.update(params)
        checked = _check_params(merged)
        super().__init__(scale, checked.pop('round_output'))
        self.preset = preset
        self.params = checked
        self._tool_cache = {}

    def options(self):
        return {**super().options(), 'preset': self.preset, **copy.deepcopy(self.params)}

    # -------------------------------- draws -------------------------------- #

    def kernel_sizes(self, suffix=''):
        """Odd kernel sizes 7..blur_kernel_size{suffix} (basicsr's hard-coded 7..21 at the default 21)."""
        return list(range(7, self.params['blur_kernel_size' + suffix] + 1, 2))

    def draw_kernels(self, batch, generator=None, device='cpu'):
        """Draw kernel1, kernel2 and the final sinc kernel per sample, as basicsr's RealESRGANDataset does.

        Per sample: a size from :meth:`kernel_sizes`; with sinc_prob a sinc kernel (cutoff U[pi/3, pi) below size
        13, else U[pi/5, pi)), otherwise a kernel type from kernel_list with kernel_prob, sigma_x, sigma_y in
        blur_sigma, theta in [-pi, pi) (isotropic: sigma_y = sigma_x, theta = 0), beta with p 1/2 in
        [low, 1) else [1, high) of betag_range/betap_range. Final: with final_sinc_prob a sinc kernel (cutoff
        U[pi/3, pi)), else the identity pulse. Every sample consumes the same number of draws whatever its branch.

        Args:
            batch (int): number of samples.
            generator (torch.Generator | None): source of the draws (None: the global RNG of ``device``).
            device (torch.device | str): where the kernels go.

        Returns:
            tuple[Tensor, Tensor, Tensor]: kernel1 [B,K1,K1], kernel2 [B,K2,K2], sinc_kernel [B,K1,K1], float32,
            each kernel summing to 1 (K = blur_kernel_size, blur_kernel_size2).
        """
        work = _draw_device(generator, device)
        kernel1 = self._draw_blur_kernels(batch, '', generator, work)
        kernel2 = self._draw_blur_kernels(batch, '2', generator, work)
        u = torch.rand(batch, 3, generator=generator, device=work, dtype=torch.float64)
        size = self.params['blur_kernel_size']
        sizes = torch.tensor(self.kernel_sizes(), device=work)
        sinc = sinc_kernels(math.pi / 3 + (math.pi - math.pi / 3) * u[:, 2], self._pick(sizes, u[:, 1]), size)
        pulse = torch.zeros(size, size, dtype=torch.float64, device=work)
        pulse[size // 2, size // 2] = 1
        final = torch.where((u[:, 0] < self.params['final_sinc_prob']).view(-1, 1, 1), sinc, pulse)
        return tuple(k.to(device=device, dtype=torch.float32) for k in (kernel1, kernel2, final))

    @staticmethod
    def _pick(values, u):
        """values[floor(u * len)]: a uniform choice, as ``random.choice``."""
        return values[(u * len(values)).long().clamp_max(len(values) - 1)]

    def _draw_blur_kernels(self, batch, suffix, generator, device):
        p = {key: self.params[key + suffix] for key in ('kernel_list', 'kernel_prob', 'sinc_prob', 'blur_sigma',
                                                       'betag_range', 'betap_range', 'blur_kernel_size')}
        u = torch.rand(batch, 9, generator=generator, device=device, dtype=torch.float64)
        sizes = self._pick(torch.tensor(self.kernel_sizes(suffix), device=device), u[:, 0])
        # random.choices over kernel_list, then the index of that name in KERNEL_TYPES.
        cumulative = torch.tensor(p['kernel_prob'], dtype=torch.float64, device=device).cumsum(0)
        listed = torch.searchsorted(cumulative, u[:, 3] * cumulative[-1], right=True).clamp_max(len(cumulative) - 1)
        kind = torch.tensor([KERNEL_TYPES.index(name) for name in p['kernel_list']], device=device)[listed]
        family, isotropic = kind // 2, kind % 2 == 0
        low, high = p['blur_sigma']
        sigma_x = low + (high - low) * u[:, 4]
        sigma_y = torch.where(isotropic, sigma_x, low + (high - low) * u[:, 5])
        theta = torch.where(isotropic, torch.zeros_like(sigma_x), -math.pi + 2 * math.pi * u[:, 6])
        # Per family: the Gaussian ignores beta; generalized uses betag_range, plateau betap_range.
        beta_range = torch.tensor([[1., 1.], p['betag_range'], p['betap_range']], dtype=torch.float64,
                                  device=device)[family]
        beta = torch.where(u[:, 7] < 0.5, beta_range[:, 0] + (1 - beta_range[:, 0]) * u[:, 8],
                           1 + (beta_range[:, 1] - 1) * u[:, 8])
        blur = bivariate_kernels(family, sizes, sigma_x, sigma_y, theta, beta, p['blur_kernel_size'])
        # basicsr's cutoff range for sinc blur kernels depends on the kernel size.
        omega = torch.where(sizes < 13, math.pi / 3 + (math.pi - math.pi / 3) * u[:, 2],
                            math.pi / 5 + (math.pi - math.pi / 5) * u[:, 2])
        sinc = sinc_kernels(omega, sizes, p['blur_kernel_size'])
        return torch.where((u[:, 1] < p['sinc_prob']).view(-1, 1, 1), sinc, blur)

    def draw_plan(self, generator=None, device='cpu'):
        """Draw the per-batch choices (:class:`DegradationPlan`) with basicsr's probabilities: resize type with
        resize_prob(2) and factor in resize_range(2), mode uniform over RESIZE_MODES, Gaussian noise with
        gaussian_noise_prob(2) else Poisson, second blur with second_blur_prob, final order 1/2 each.

        Args:
            generator (torch.Generator | None): source of the draws (None: the global RNG of ``device``).
            device (torch.device | str): where the draws are made when ``generator`` is None.
        """
        u = _rand(generator, device, 11, dtype=torch.float64).tolist()
        p = self.params
        modes = [RESIZE_MODES[min(int(v * len(RESIZE_MODES)), len(RESIZE_MODES) - 1)] for v in (u[2], u[7], u[10])]
        return DegradationPlan(
            scale1=_resize_factor(p['resize_prob'], p['resize_range'], u[0], u[1]), mode1=modes[0],
            gaussian1=u[3] < p['gaussian_noise_prob'], blur2=u[4] < p['second_blur_prob'],
            scale2=_resize_factor(p['resize_prob2'], p['resize_range2'], u[5], u[6]), mode2=modes[1],
            gaussian2=u[8] < p['gaussian_noise_prob2'], resize_first=u[9] < 0.5, mode3=modes[2])

    # ------------------------------- the chain ------------------------------- #

    def min_size(self):
        """The smallest HR side: every reflect-padded filter needs its padding to be smaller than the image."""
        pad1, pad2 = self.params['blur_kernel_size'] // 2, self.params['blur_kernel_size2'] // 2
        size = self.scale
        while not (size > pad1 and (not self.params['use_usm'] or size > _USM_RADIUS // 2)
                   and size // self.scale > pad1  # the final sinc, at LQ size
                   and (self.params['second_blur_prob'] == 0
                        or math.floor(size * self.params['resize_range'][0]) > pad2)):
            size += self.scale
        return size

    def _tools(self, device):
        """basicsr's DiffJPEG and USMSharp on ``device``, made once per device and kept out of the state dict."""
        tools = self._tool_cache.get(device)
        if tools is None:
            # DiffJPEG's quantisation tables are module-level nn.Parameters shared by every instance; a deep copy
            # owns its tables, so moving it never moves another DiffJPEG (basicsr's model moves them to the GPU).
            jpeger = copy.deepcopy(DiffJPEG(differentiable=False)).to(device).requires_grad_(False)
            tools = self._tool_cache[device] = (jpeger, USMSharp().to(device))
        return tools

    def _noise(self, img, gaussian, suffix, generator):
        gray_prob = self.params['gray_noise_prob' + suffix]
        if gaussian:
            return _gaussian_noise(img, self.params['noise_range' + suffix], gray_prob, generator)
        return _poisson_noise(img, self.params['poisson_scale_range' + suffix], gray_prob, generator)

    def _jpeg(self, img, suffix, generator):
        quality = _uniform(generator, img.device, img.size(0), *self.params['jpeg_range' + suffix])
        # Clamp first: DiffJPEG on values outside [0, 1] gives unpleasant artifacts (basicsr's comment). Its output
        # is contiguous, as filter2D after it needs, through gtplus_compat's patch_diffjpeg_contiguous.
        return self._tools(img.device)[0](torch.clamp(img, 0, 1), quality=quality)

    @torch.no_grad()
    def degrade(self, hr, kernel1, kernel2, sinc_kernel, plan, generator=None):
        """Run the chain with given kernels and per-batch choices; draw only the per-sample noise and JPEG values.

        Args:
            hr (Tensor): [B,3,H,W] RGB in [0,1], H and W multiples of scale.
            kernel1, kernel2, sinc_kernel (Tensor): [B,K,K] (or [1,K,K] for the whole batch), odd K, each summing
                to 1 (e.g. from :meth:`draw_kernels`, or basicsr's dataset).
            plan (DegradationPlan): the per-batch choices (e.g. from :meth:`draw_plan`).
            generator (torch.Generator | None): source of the noise and JPEG draws (None: torch's global RNG of
                ``hr``'s device); drawn in feed_data's order, so a generator seeded like feed_data's global RNG
                gives feed_data's LQ.

        Returns:
            Tensor: [B,3,H/scale,W/scale] RGB in [0,1], ``hr``'s dtype and device (computed in float32, as basicsr's
            DiffJPEG requires).
        """
        self.check_input(hr)
        x = hr.float()
        kernel1, kernel2, sinc_kernel = (k.to(device=x.device, dtype=x.dtype) for k in (kernel1, kernel2, sinc_kernel))
        height, width = x.shape[-2:]
        if self.params['use_usm']:
            x = self._tools(x.device)[1](x)
        # ----------------------------- the first degradation ----------------------------- #
        out = filter2D(x, kernel1)
        out = F.interpolate(out, scale_factor=plan.scale1, mode=plan.mode1)
        out = self._noise(out, plan.gaussian1, '', generator)
        out = self._jpeg(out, '', generator)
        # ----------------------------- the second degradation ----------------------------- #
        if plan.blur2:
            out = filter2D(out, kernel2)
        out = F.interpolate(out, size=(int(height / self.scale * plan.scale2), int(width / self.scale * plan.scale2)),
                            mode=plan.mode2)
        out = self._noise(out, plan.gaussian2, '2', generator)
        # Resize back + sinc, and JPEG, in either order; other orders give twisted lines (Real-ESRGAN's finding).
        lq_size = (height // self.scale, width // self.scale)
        if plan.resize_first:
            out = filter2D(F.interpolate(out, size=lq_size, mode=plan.mode3), sinc_kernel)
            out = self._jpeg(out, '2', generator)
        else:
            out = self._jpeg(out, '2', generator)
            out = filter2D(F.interpolate(out, size=lq_size, mode=plan.mode3), sinc_kernel)
        return self.finish(out, hr.dtype)

    @torch.no_grad()
    def forward(self, hr, generator=None):
        """Tensor[B,3,H,W] RGB in [0,1] -> Tensor[B,3,H/scale,W/scale] RGB in [0,1]; see the class docstring."""
        self.check_input(hr)
        kernels = self.draw_kernels(hr.size(0), generator, hr.device)
        return self.degrade(hr, *kernels, self.draw_plan(generator, hr.device), generator)


# basicsr's random_add_gaussian_noise_pt / random_add_poisson_noise_pt (clip=True, rounds=False), with every draw
# from ``generator`` in basicsr's order, so that a generator in the state of feed_data's global RNG gives its noise.


def _gaussian_noise(img, sigma_range, gray_prob, generator):
    """img [B,C,H,W] in [0,1] + Gaussian noise of sigma U[sigma_range)/255 per sample, gray with gray_prob;
    clamped to [0,1]."""
    b, _, h, w = img.size()
    sigma = _rand(generator, img.device, b) * (sigma_range[1] - sigma_range[0]) + sigma_range[0]
    gray_noise = (_rand(generator, img.device, b) < gray_prob).float()
    sigma, gray_noise = sigma.view(b, 1, 1, 1), gray_noise.view(b, 1, 1, 1)
    use_gray = torch.sum(gray_noise) > 0
    if use_gray:
        # basicsr draws one HxW field for the batch, scaled per sample: gray-noise samples share its pattern.
        noise_gray = (_randn(generator, img.device, h, w) * sigma / 255.).view(b, 1, h, w)
    noise = _randn(generator, img.device, *img.size()) * sigma / 255.
    if use_gray:
        noise = noise * (1 - gray_noise) + noise_gray * gray_noise
    return torch.clamp(img + noise, 0, 1)


def _poisson_sample(img, generator):
    """Poisson (shot) noise of ``img`` [B,C,H,W] at 2^ceil(log2(#distinct 8-bit levels)) photons per unit."""
    img = torch.clamp((img * 255.0).round(), 0, 255) / 255.
    levels = [2**math.ceil(math.log2(len(torch.unique(img[i])))) for i in range(img.size(0))]
    vals = img.new_tensor(levels).view(-1, 1, 1, 1)
    return _poisson(generator, img * vals) / vals - img


def _poisson_noise(img, scale_range, gray_prob, generator):
    """img [B,3,H,W] in [0,1] + Poisson noise scaled by U[scale_range) per sample, gray with gray_prob; clamped."""
    b, _, h, w = img.size()
    scale = _rand(generator, img.device, b) * (scale_range[1] - scale_range[0]) + scale_range[0]
    gray_noise = (_rand(generator, img.device, b) < gray_prob).float().view(b, 1, 1, 1)
    use_gray = torch.sum(gray_noise) > 0
    if use_gray:
        noise_gray = _poisson_sample(rgb_to_grayscale(img, num_output_channels=1), generator).expand(b, 3, h, w)
    noise = _poisson_sample(img, generator)
    if use_gray:
        noise = noise * (1 - gray_noise) + noise_gray * gray_noise
    return torch.clamp(img + noise * scale.view(b, 1, 1, 1), 0, 1)


# ------------------------------------------------------------------------------------------------------------ #
# Undertrained reconstruction
# ------------------------------------------------------------------------------------------------------------ #


def _network_block(block, key):
    """A network option mapping ``{'type': <registered arch>, **kwargs}`` checked and copied (JSON-able)."""
    if not isinstance(block, Mapping) or 'type' not in block:
        raise ValueError(f"UndertrainedReconstructionSynthesizer {key} needs a 'type' key naming a registered "
                         f'network, got {block!r}')
    return copy.deepcopy(dict(block))


@ARCH_REGISTRY.register()
class UndertrainedReconstructionSynthesizer(Synthesizer):
    """Undertrained reconstruction as a degradation (METHODS.md §3): HR -> first stage (↓scale) -> LR -> G(LR).

    G is a reconstruction network (an image autoencoder such as VQ-VAE-2) stopped after a few epochs of training on
    LR images, so its reconstructions carry the artefacts it has not yet learned to avoid (colour shifts, blur,
    codebook blocks): those are the degradation. The weights come from a ``ReconstructionModel`` snapshot, loaded
    into :meth:`weights_module` by :func:`gtplus_models.synthesis.load_synthesizer` (no file I/O here); the paper's
    best was VQ-VAE-2 at epoch 8 of a {4, 8, 16, 32, 64} sweep.

    The reconstruction network is kept in eval mode whatever ``train()`` is called with: in training mode the EMA
    codebooks of a VQ-VAE would update on every batch, and a synthesizer never learns. In eval mode a VQ-VAE is
    deterministic, so every random draw comes from the first stage (none for bicubic), through ``generator``.
    The network must be on the input's device (``load_synthesizer`` puts it there; otherwise ``.to(device)``).

    Args:
        scale (int): HR size / LQ size (the first stage's factor; the reconstruction keeps the size).
        reconstruction (dict): the network block, ``{type: <registered arch>, **kwargs}``, as in the
            ``network_g`` of the ReconstructionModel option file that trained the snapshot (default
            ``{type: VQVAE2}``, the paper's setup). The network maps [B,3,h,w] RGB [0,1] to the same size: a tensor,
            or a tuple whose first item is the image (VQVAE/VQVAE2 return ``(reconstruction, latent_loss)``).
        first_stage (dict | None): the downscaling synthesizer block, e.g. ``{type: RealESRGANSynthesizer, preset:
            stablesr}``; default (None) ``{type: BicubicSynthesizer}``, the LR a ReconstructionModel trains on by
            default. Its ``scale`` defaults to ``scale`` and must equal it.
        round_output (bool): round LR_deg to 8-bit levels, as an LR PNG holds them.
    """

    def __init__(self, scale=4, reconstruction=None, first_stage=None, round_output=True):
        super().__init__(scale, round_output)
        self.reconstruction_opt = _network_block(reconstruction or {'type': 'VQVAE2'}, 'reconstruction')
        kwargs = dict(self.reconstruction_opt)
        net_cls = ARCH_REGISTRY.get(kwargs.pop('type'))
        if isinstance(net_cls, type) and issubclass(net_cls, Synthesizer):
            raise ValueError(f"UndertrainedReconstructionSynthesizer reconstruction is {net_cls.__name__}, a "
                             'synthesizer; it must be a network that keeps the image size (e.g. VQVAE2)')
        self.reconstruction = net_cls(**kwargs)
        self.first_stage = build_first_stage(first_stage, scale, {'type': 'BicubicSynthesizer'}, type(self).__name__)
        self.reconstruction.eval()

    def train(self, mode=True):
        super().train(mode)
        self.reconstruction.eval()  # EMA codebooks would learn from every batch in training mode
        return self

    def weights_module(self):
        """The reconstruction network: a ReconstructionModel snapshot (``net_g_epoch<k>.pth``) loads into it."""
        return self.reconstruction

    def min_size(self):
        return self.first_stage.min_size()

    def options(self):
        return {**super().options(), 'reconstruction': copy.deepcopy(self.reconstruction_opt),
                'first_stage': self.first_stage.provenance()}

    @torch.no_grad()
    def forward(self, hr, generator=None):
        """Tensor[B,3,H,W] RGB in [0,1] -> Tensor[B,3,H/scale,W/scale] RGB in [0,1]: G(first_stage(hr)).

        Args:
            hr (Tensor): [B,3,H,W] RGB in [0,1], H and W multiples of ``scale``.
            generator (torch.Generator | None): the first stage's draws (a bicubic first stage draws nothing).
        """
        self.check_input(hr)
        lr = self.first_stage(hr, generator)
        param = next(self.reconstruction.parameters(), None)
        out = self.reconstruction(lr.to(param.dtype if param is not None else torch.float32))
        out = out[0] if isinstance(out, (tuple, list)) else out
        if out.shape != lr.shape:
            raise ValueError(f'UndertrainedReconstructionSynthesizer: the reconstruction network '
                             f'({self.reconstruction_opt["type"]}) turned an LR batch {tuple(lr.shape)} into '
                             f'{tuple(out.shape)}; it must keep the size')
        return self.finish(out, hr.dtype)
