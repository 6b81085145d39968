"""The metric adapter: any pyiqa metric behind gtplus's conventions (:func:`create_quality_metric`).

- Input: ``Tensor[B,3,H,W]``, RGB, float in [0,1]. Anything else raises a ValueError naming the metric; callers
  clamp first. pyiqa always receives [0,1] (the official IQPIR/CFMG code feeds [-1,1] in places; that is a bug).
- Output: ``Tensor[B]`` raw pyiqa scores in the metric's own units; ``lower_better`` says which way is good.
- ``as_loss=True`` keeps the autograd graph (pyiqa's loss mode with ``loss_reduction='none'``, so still one
  score per image); otherwise scores are computed without a graph.
- pyiqa's NIQE converts RGB to luminance itself (YIQ Y = 0.299R+0.587G+0.114B, like MATLAB's rgb2gray in the
  official NIQE; basicsr's calculate_niqe uses YCbCr Y instead, so values differ slightly). NIQE and PIQE: lower
  is better. NIQE is differentiable (pyiqa rounds with a straight-through estimator); PIQE is not (plain
  ``torch.round``), so ``as_loss=True`` refuses it.
"""
import torch
from torch import nn

from gtplus_models.quality.weights import metric_config, no_downloads, resolve_weights

RANGE_EPS = 1e-6
# Metrics whose pyiqa implementation has no useful gradient: as a loss they would silently train nothing.
ZERO_GRADIENT_METRICS = {'piqe': 'pyiqa rounds the normalised image with torch.round, so its gradient is zero'}
# Smallest height and width a metric can score: pyiqa's NIQE cuts the image into 96x96 blocks (basicsr's
# pristine-parameter block size) and fails deep inside with an empty-tensor RuntimeError below one block.
MIN_SIDES = {'niqe': 96}


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
        """Raise ValueError unless ``img`` is a float Tensor[B,3,H,W] with values in [0,1] and at least the metric's
        smallest side (``MIN_SIDES``)."""
        if not torch.is_tensor(img) or img.ndim != 4 or img.shape[1] != 3 or not img.is_floating_point():
            desc = f'{tuple(img.shape)} {img.dtype}' if torch.is_tensor(img) else type(img).__name__
            raise ValueError(f"quality metric '{self.name}': {what} must be a float Tensor[B,3,H,W] (RGB), got {desc}")
        low, high = float(img.detach().min()), float(img.detach().max())
        if low < -RANGE_EPS or high > 1 + RANGE_EPS:
            raise ValueError(f"quality metric '{self.name}': {what} must be in [0,1] (clamp first; pyiqa always "
                             f'receives [0,1]), got min={low:.4f} max={high:.4f}')
        min_side = MIN_SIDES.get(self.name, 1)
        if min(img.shape[-2:]) < min_side:
            raise ValueError(f"quality metric '{self.name}': {what} is {img.shape[-1]}x{img.shape[-2]}, it needs at "
                             f'least {min_side}x{min_side} pixels (enlarge or score larger crops)')

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
