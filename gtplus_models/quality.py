"""The quality adapter: the one door to NR-IQA (pyiqa) for the scoring tool, the quality losses and validation.

Every caller goes through :func:`create_quality_metric`. Conventions it enforces:

- Input: ``Tensor[B,3,H,W]``, RGB, float in [0,1]. Anything else raises a ValueError naming the metric; callers
  clamp first. pyiqa always receives [0,1] (the official IQPIR/CFMG code feeds [-1,1] in places; that is a bug).
- Output: ``Tensor[B]`` raw pyiqa scores in the metric's own units; ``lower_better`` says which way is good.
- ``as_loss=True`` keeps the autograd graph (pyiqa's loss mode with ``loss_reduction='none'``, so still one
  score per image); otherwise scores are computed without a graph.
- Weights never download. They come from ``weights_path`` (YAML key ``weights_path``, CLI ``--weights
  name=path``) or from pyiqa's cache folder. A missing file raises :class:`MissingWeightsError` before any
  network attempt, naming the metric, the file and the folder to put it in.
- NIQE works offline: basicsr ships the pristine MVG parameters of the official NIQE release
  (``basicsr/metrics/niqe_pris_params.npz``). :func:`niqe_params_path` converts them once into the ``.mat``
  layout pyiqa's NIQE arch loads (``mu_prisparam`` 1x36, ``cov_prisparam`` 36x36) and the adapter passes that
  path as ``pretrained_model_path``. pyiqa converts RGB to luminance itself (YIQ Y = 0.299R+0.587G+0.114B, like
  MATLAB's rgb2gray in the official NIQE; basicsr's calculate_niqe uses YCbCr Y instead, so values differ
  slightly). NIQE and PIQE: lower is better. NIQE is differentiable (pyiqa rounds with a straight-through
  estimator); PIQE is not (plain ``torch.round``), so ``as_loss=True`` refuses it.

Ensembles (IQPIR "Quality scores"): each metric is min-max normalised over the dataset, lower-is-better metrics are
flipped, and the normalised scores are averaged, giving ``s`` in [0,1] (:func:`normalise_scores`,
:class:`QualityEnsemble`). IQPIR bins with ``floor(10*s)`` and keeps ``s <= 0.99``; that clamp belongs to its
conditioning code, not here, so the best image of a dataset may score exactly 1.
"""
import contextlib
import inspect
import os
import os.path as osp
import sys
import urllib.request
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

NIQE_METRICS = ('niqe', )  # pyiqa names whose default parameters we replace with basicsr's pristine ones
RANGE_EPS = 1e-6
# Metrics whose pyiqa implementation has no useful gradient: as a loss they would silently train nothing.
ZERO_GRADIENT_METRICS = {'piqe': 'pyiqa rounds the normalised image with torch.round, so its gradient is zero'}


class MissingWeightsError(FileNotFoundError):
    """A metric needs a weight file that is not on this machine (nothing is ever downloaded)."""


def pyiqa_cache_dir():
    """The folder pyiqa looks in for its weight files (``$TORCH_HOME/hub/pyiqa``, by default ~/.cache/torch/...)."""
    from pyiqa.utils import download_util
    return download_util.DEFAULT_CACHE_DIR


def gtplus_cache_dir():
    """Where gtplus keeps files it derives offline (``$GTPLUS_CACHE_DIR``, default ``~/.cache/gtplus``)."""
    return os.environ.get('GTPLUS_CACHE_DIR') or osp.join(osp.expanduser('~'), '.cache', 'gtplus')


def niqe_params_path(cache_dir=None):
    """Path of NIQE's pristine parameters in pyiqa's ``.mat`` layout, converted from basicsr's ``.npz`` once.

    basicsr's ``gaussian_window`` is not stored: pyiqa builds the same 7x7, sigma 7/6 window itself.

    Args:
        cache_dir (str | None): output folder; default :func:`gtplus_cache_dir`.

    Returns:
        str: ``<cache_dir>/niqe_pris_params_basicsr.mat``.
    """
    import basicsr.metrics
    import scipy.io
    path = osp.join(cache_dir or gtplus_cache_dir(), 'niqe_pris_params_basicsr.mat')
    if not osp.isfile(path):
        params = np.load(osp.join(osp.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))
        os.makedirs(osp.dirname(path), exist_ok=True)
        tmp = f'{path}.{os.getpid()}.tmp.mat'  # per process: concurrent first uses must not share a temp file
        scipy.io.savemat(tmp, {'mu_prisparam': params['mu_pris_param'], 'cov_prisparam': params['cov_pris_param']})
        os.replace(tmp, path)
    return path


def metric_config(name):
    """pyiqa's default config of metric ``name`` (KeyError listing the choices if unknown)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    if name not in DEFAULT_CONFIGS:
        raise KeyError(f"unknown pyiqa metric '{name}'; choose from: {', '.join(sorted(DEFAULT_CONFIGS))}")
    return DEFAULT_CONFIGS[name]


def _arch_class(metric_opts):
    """The pyiqa arch class of a metric, importing only the module that defines it.

    pyiqa's own lazy import falls back to importing every arch module when a class is not in a same-named file
    (CFANet lives in topiq_arch.py), which takes seconds; a text search for the class finds the one file.
    """
    import importlib

    import pyiqa.archs
    from pyiqa.utils.registry import ARCH_REGISTRY
    arch = metric_opts['type']
    if arch not in ARCH_REGISTRY:
        folder = osp.dirname(pyiqa.archs.__file__)
        for file in sorted(os.listdir(folder)):
            if file.endswith('_arch.py'):
                with open(osp.join(folder, file), encoding='utf-8') as f:
                    if f'class {arch}(' in f.read():
                        importlib.import_module(f'pyiqa.archs.{file[:-3]}')
                        break
    return ARCH_REGISTRY.get(arch)


def default_weight_file(name, metric_opts):
    """The file name pyiqa would download for metric ``name``, or None if it needs no main weight file.

    Found from the arch module's ``default_model_urls`` and the option that selects the checkpoint.
    """
    urls = getattr(sys.modules[_arch_class(metric_opts).__module__], 'default_model_urls', None)
    if not urls:
        return None
    pretrained = metric_opts.get('pretrained')
    for key in (metric_opts.get('model_name'), metric_opts.get('train_dataset'),
                pretrained if isinstance(pretrained, str) else None, name, 'url'):
        if key in urls:
            return osp.basename(urlparse(urls[key]).path)
    return None


def _missing(name, file_name, folder, what='weight file'):
    return MissingWeightsError(
        f"quality metric '{name}' needs the {what} '{file_name}', which is not on this machine (no downloads). "
        f"Put it in {folder}, or point at it with `weights_path:` in the YAML / `--weights {name}=PATH`.")


@contextlib.contextmanager
def no_downloads(name):
    """Turn every download pyiqa (or timm/torch.hub under it) would start into :class:`MissingWeightsError`.

    pyiqa imports ``load_file_from_url`` by name into each arch module, so each binding is swapped. Cached files
    are still returned, as pyiqa would.
    """
    from pyiqa.utils import download_util
    original = download_util.load_file_from_url

    def cached_only(url, model_dir=None, progress=True, file_name=None):
        folder = model_dir or download_util.DEFAULT_CACHE_DIR
        file_name = file_name or osp.basename(urlparse(url).path)
        if osp.isfile(osp.join(folder, file_name)):
            return osp.abspath(osp.join(folder, file_name))
        raise _missing(name, file_name, folder)

    def hub_download(url, dst, *args, **kwargs):
        raise _missing(name, osp.basename(urlparse(url).path), osp.dirname(dst), 'torch.hub file')

    def urlopen(url, *args, **kwargs):  # pyiqa's CLIP loader downloads with urllib
        url = getattr(url, 'full_url', url)
        raise MissingWeightsError(f"quality metric '{name}' needs '{osp.basename(urlparse(url).path)}' (from {url}), "
                                  f'which is not on this machine (no downloads); pyiqa\'s CLIP loader looks in '
                                  f'{osp.join(torch.hub.get_dir(), "clip")}')

    modules = [m for key, m in list(sys.modules.items())
               if key.startswith('pyiqa') and getattr(m, 'load_file_from_url', None) is original]
    saved = (torch.hub.download_url_to_file, urllib.request.urlopen)
    for module in modules:
        module.load_file_from_url = cached_only
    torch.hub.download_url_to_file, urllib.request.urlopen = hub_download, urlopen
    try:
        yield
    except (OSError, ValueError) as err:  # huggingface_hub's offline misses (timm backbones, CLIP)
        if isinstance(err, MissingWeightsError) or not type(err).__module__.startswith('huggingface_hub'):
            raise
        raise MissingWeightsError(
            f"quality metric '{name}' needs Hugging Face files that are not in the local cache "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); no downloads: {err}") from None
    finally:
        for module in modules:
            module.load_file_from_url = original
        torch.hub.download_url_to_file, urllib.request.urlopen = saved


def check_safe_checkpoint(path):
    """Refuse a torch checkpoint that needs pickled code (pyiqa itself loads with ``weights_only=False``)."""
    if osp.splitext(path)[1].lower() in ('.pth', '.pt', '.ckpt', '.bin'):
        try:
            torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # noqa: BLE001  (any failure means: not a plain tensor checkpoint)
            raise ValueError(f'{path} is not a plain tensor checkpoint (torch.load weights_only=True failed: '
                             f'{type(err).__name__}); refusing to unpickle it') from None


def resolve_weights(name, metric_opts, weights_path=None):
    """Options to add to pyiqa's for metric ``name``: a checked local ``pretrained_model_path`` or nothing.

    Raises:
        MissingWeightsError: ``weights_path`` is given but absent, or the default file is not in pyiqa's cache.
    """
    if weights_path is not None:
        if not osp.isfile(weights_path):
            raise MissingWeightsError(f"quality metric '{name}': weights_path {weights_path} does not exist")
        check_safe_checkpoint(weights_path)
        extra = {'pretrained_model_path': weights_path}
        if 'backbone_pretrain' in inspect.signature(_arch_class(metric_opts)).parameters:
            extra['backbone_pretrain'] = False  # the full checkpoint holds the backbone; don't fetch ImageNet's
        return extra
    if name in NIQE_METRICS:
        return {'pretrained_model_path': niqe_params_path()}
    file_name = default_weight_file(name, metric_opts)
    if file_name is not None:
        cached = osp.join(pyiqa_cache_dir(), file_name)
        if not osp.isfile(cached):
            raise _missing(name, file_name, pyiqa_cache_dir())
        check_safe_checkpoint(cached)
    return {}


class QualityMetric(nn.Module):
    """One NR (or FR) pyiqa metric behind gtplus' conventions. Build it with :func:`create_quality_metric`.

    Attributes:
        name (str): the pyiqa metric name.
        lower_better (bool): True for NIQE, PIQE, BRISQUE...
        as_loss (bool): whether forward keeps the autograd graph.
        metric_mode (str): 'NR' or 'FR'.
    """

    def __init__(self, name, pyiqa_metric, as_loss):
        super().__init__()
        self.name, self.as_loss = name, as_loss
        self.iqa = pyiqa_metric
        self.lower_better = bool(pyiqa_metric.lower_better)
        self.metric_mode = pyiqa_metric.metric_mode

    def check_input(self, img, what='img'):
        """Raise ValueError unless ``img`` is a float Tensor[B,3,H,W] with values in [0,1]."""
        if not torch.is_tensor(img) or img.ndim != 4 or img.shape[1] != 3 or not img.is_floating_point():
            desc = f'{tuple(img.shape)} {img.dtype}' if torch.is_tensor(img) else type(img).__name__
            raise ValueError(f"quality metric '{self.name}': {what} must be a float Tensor[B,3,H,W] (RGB), got {desc}")
        low, high = float(img.detach().min()), float(img.detach().max())
        if low < -RANGE_EPS or high > 1 + RANGE_EPS:
            raise ValueError(f"quality metric '{self.name}': {what} must be in [0,1] (clamp first; pyiqa always "
                             f'receives [0,1]), got min={low:.4f} max={high:.4f}')

    def forward(self, img, ref=None):
        """Score a batch.

        Args:
            img (Tensor): [B,3,H,W] RGB in [0,1].
            ref (Tensor | None): [B,3,H,W] RGB in [0,1] reference, for FR metrics only.

        Returns:
            Tensor: [B] scores (raw metric units; see ``lower_better``).
        """
        self.check_input(img)
        if self.metric_mode == 'FR':
            if ref is None:
                raise ValueError(f"quality metric '{self.name}' is full-reference: pass ref")
            self.check_input(ref, 'ref')
        score = self.iqa(img, ref) if self.metric_mode == 'FR' else self.iqa(img)
        if isinstance(score, (tuple, list)):
            score = score[0]
        return score.reshape(img.shape[0], -1)[:, 0].to(img.dtype)


def create_quality_metric(name, weights_path=None, as_loss=False, device='cpu', **pyiqa_kwargs):
    """Build pyiqa metric ``name`` offline.

    Args:
        name (str): any pyiqa metric name ('niqe', 'piqe', 'musiq', 'topiq_nr', 'maniqa', ...).
        weights_path (str | None): local weight file; default: pyiqa's cache (NIQE: basicsr's parameters).
        as_loss (bool): keep the autograd graph (for losses). Scores are still per image. Refused for metrics
            without a gradient (PIQE: ValueError) rather than training on zeros.
        device (str | torch.device): where the metric runs.
        **pyiqa_kwargs: passed to the pyiqa arch (e.g. ``crop_border``, ``test_y_channel``).

    Returns:
        QualityMetric: ``forward(img: Tensor[B,3,H,W] RGB [0,1]) -> Tensor[B]``.

    Raises:
        MissingWeightsError: a needed weight file is absent (message names file and folder); never downloads.
    """
    import pyiqa
    config = metric_config(name)
    if as_loss and name in ZERO_GRADIENT_METRICS:
        raise ValueError(f"quality metric '{name}' cannot be a loss: {ZERO_GRADIENT_METRICS[name]}")
    kwargs = dict(resolve_weights(name, config['metric_opts'], weights_path), **pyiqa_kwargs)
    if as_loss:
        kwargs['loss_reduction'] = 'none'  # one score per image, like inference mode
    with no_downloads(name):
        metric = pyiqa.create_metric(name, as_loss=as_loss, device=torch.device(device), **kwargs)
    return QualityMetric(name, metric, as_loss).eval()


def normalise_scores(raw, lower_better, bounds=None):
    """IQPIR's ensemble: per-metric min-max normalisation, lower-is-better flipped, then the mean.

    Args:
        raw (dict[str, array-like]): metric name -> scores of N images (same order for every metric).
        lower_better (dict[str, bool]): metric name -> direction.
        bounds (dict[str, tuple[float, float]] | None): metric -> (min, max); default: the scores' own.
            A metric whose max equals its min carries no ranking and normalises to 0.5.

    Returns:
        tuple[ndarray, dict]: ensemble scores [N] in [0,1] (1 = best; clipped when bounds come from elsewhere)
        and {metric: normalised [N]}.
    """
    if not raw:
        raise ValueError('normalise_scores needs at least one metric')
    normalised = {}
    for name, values in raw.items():
        values = np.asarray(values, dtype=np.float64)
        low, high = bounds[name] if bounds else (values.min(), values.max())
        unit = np.full_like(values, 0.5) if high <= low else np.clip((values - low) / (high - low), 0, 1)
        normalised[name] = 1. - unit if lower_better[name] else unit
    return np.mean(list(normalised.values()), axis=0), normalised


class QualityEnsemble(nn.Module):
    """Several NR metrics combined into one score ``s`` in [0,1] (1 = best), IQPIR-style.

    Call :meth:`fit` with a dataset's raw scores (or restore ``bounds`` from a side file) before ``forward``.

    Args:
        names (list[str]): pyiqa metric names.
        weights (dict[str, str] | None): metric name -> local weight file.
        device (str): where the metrics run.
        as_loss (bool): keep the graph (for losses).
    """

    def __init__(self, names, weights=None, device='cpu', as_loss=False):
        super().__init__()
        weights = weights or {}
        self.names = list(names)
        self.metrics = nn.ModuleDict(
            {n: create_quality_metric(n, weights.get(n), as_loss=as_loss, device=device) for n in self.names})
        self.lower_better = {n: m.lower_better for n, m in self.metrics.items()}
        self.bounds = None

    def raw_scores(self, img):
        """{metric: Tensor[B]} for img [B,3,H,W] RGB in [0,1]."""
        return {n: m(img) for n, m in self.metrics.items()}

    def fit(self, raw):
        """Take each metric's (min, max) from ``raw`` ({metric: scores over the dataset}); returns self."""
        self.bounds = {n: (float(np.min(raw[n])), float(np.max(raw[n]))) for n in self.names}
        return self

    def forward(self, img):
        """Ensemble score of img [B,3,H,W] RGB in [0,1] -> Tensor[B] in [0,1] (dataset bounds from ``fit``)."""
        if self.bounds is None:
            raise RuntimeError('QualityEnsemble.forward needs dataset bounds: call fit(raw_scores) first')
        parts = []
        for name, score in self.raw_scores(img).items():
            low, high = self.bounds[name]
            unit = (score - low) / (high - low) if high > low else torch.full_like(score, 0.5)
            unit = unit.clamp(0, 1)
            parts.append(1 - unit if self.lower_better[name] else unit)
        return torch.stack(parts).mean(0)
