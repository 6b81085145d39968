"""Any pyiqa metric as a BasicSR validation metric, through the quality adapter.

Usage in a BasicSR option file::

    val:
      metrics:
        niqe: {type: calculate_pyiqa, metric: niqe, better: lower}
        musiq: {type: calculate_pyiqa, metric: musiq, weights_path: /weights/musiq_koniq_ckpt-e95806b9.pth}
        lpips: {type: calculate_pyiqa, metric: lpips, better: lower, weights_path: ...}   # FR: uses the GT

BasicSR's ``SRModel.nondist_validation`` calls ``calculate_metric(dict(img=sr, img2=gt), opt)`` with ``tensor2img``
outputs (HxWx3 uint8, BGR) and passes every key of ``opt`` except ``type`` (so ``better`` arrives too, and is
ignored here). No-reference metrics ignore ``img2``.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from gtplus_data.image_util import bgr_image_to_tensor
from gtplus_models.quality import create_quality_metric

_METRICS = {}  # built once per (metric, weights, options, device): validation calls this per image


def cached_quality_metric(metric, weights_path=None, device='cpu', **kwargs):
    """The adapter's metric for these options, built on first use and reused afterwards."""
    key = (metric, weights_path, str(device), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _METRICS:
        _METRICS[key] = create_quality_metric(metric, weights_path=weights_path, device=device, **kwargs)
    return _METRICS[key]


@METRIC_REGISTRY.register()
def calculate_pyiqa(img, img2=None, metric='niqe', weights_path=None, crop_border=0, input_order='HWC',
                    device='cpu', better=None, **kwargs):
    """Score ``img`` with pyiqa metric ``metric`` (through :func:`gtplus_models.quality.create_quality_metric`).

    Args:
        img (ndarray): restored image, HxWx3 BGR in [0,255] (basicsr's tensor2img output).
        img2 (ndarray | None): GT, same layout; used by full-reference metrics only.
        metric (str): pyiqa metric name.
        weights_path (str | None): local weight file (default: pyiqa's cache; NIQE: basicsr's parameters).
        crop_border (int): pixels cropped from each edge before scoring.
        input_order (str): 'HWC' or 'CHW'.
        device (str): where the metric runs (default CPU: validation images arrive as numpy on the host).
        better (str | None): basicsr's 'higher'/'lower' bookkeeping key; not used here.
        **kwargs: further pyiqa options.

    Returns:
        float: the score.
    """
    quality = cached_quality_metric(metric, weights_path, device, **kwargs)
    tensor = bgr_image_to_tensor(img, crop_border, input_order).to(device)
    ref = None
    if quality.metric_mode == 'FR':
        if img2 is None:
            raise ValueError(f"calculate_pyiqa: '{metric}' is full-reference but the validation set has no GT")
        ref = bgr_image_to_tensor(img2, crop_border, input_order).to(device)
    with torch.no_grad():
        return float(quality(tensor, ref)[0])
