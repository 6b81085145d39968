"""Offline weights of the NR-IQA metrics: where each file must be, and a refusal to download anything.

- Weights come from ``weights_path`` (YAML key ``weights_path``, CLI ``--weights name=path``) or from pyiqa's cache
  folder. A missing file raises :class:`MissingWeightsError` before any network attempt, naming the metric, the file
  and the folder to put it in (:func:`resolve_weights`, :func:`no_downloads`).
- NIQE works offline: basicsr ships the pristine MVG parameters of the official NIQE release
  (``basicsr/metrics/niqe_pris_params.npz``). :func:`niqe_params_path` converts them once into the ``.mat``
  layout pyiqa's NIQE arch loads (``mu_prisparam`` 1x36, ``cov_prisparam`` 36x36).
- Every torch checkpoint is checked to load with ``weights_only=True`` before pyiqa (which unpickles fully) sees it.
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

NIQE_METRICS = ('niqe', )  # pyiqa names whose default parameters we replace with basicsr's pristine ones


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

    from gtplus_data.atomic_file import atomic_output
    path = osp.join(cache_dir or gtplus_cache_dir(), 'niqe_pris_params_basicsr.mat')
    if not osp.isfile(path):
        params = np.load(osp.join(osp.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))
        with atomic_output(path) as f:  # a per-process temporary: concurrent first uses never share one
            scipy.io.savemat(f, {'mu_prisparam': params['mu_pris_param'], 'cov_prisparam': params['cov_pris_param']})
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
