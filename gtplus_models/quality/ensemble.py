"""IQPIR's quality score: several NR metrics, each min-max normalised over a dataset, combined into s in [0,1].

Each metric is min-max normalised over the dataset, lower-is-better metrics are flipped, and the normalised scores
are averaged, giving ``s`` in [0,1] (:func:`normalise_scores`, :class:`QualityEnsemble`). IQPIR bins with
``floor(10*s)`` and keeps ``s <= 0.99``; that clamp belongs to its conditioning code, not here, so the best image of
a dataset may score exactly 1.
"""
import numpy as np
import torch
from torch import nn

from gtplus_models.quality.metric import create_quality_metric


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
