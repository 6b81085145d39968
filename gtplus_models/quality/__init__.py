"""The one door to NR-IQA (pyiqa) for scoring, quality losses and validation metrics.

- ``weights.py``: offline weights (local files only, never a download; NIQE from basicsr's pristine parameters).
- ``metric.py``: the adapter, :func:`create_quality_metric` (RGB [0,1] in, ``Tensor[B]`` scores out, ``as_loss``).
- ``ensemble.py``: IQPIR's normalised ensemble score s in [0,1].

Anything in gtplus that needs an IQA score imports it from here, never from pyiqa directly.
"""
from gtplus_models.quality.ensemble import QualityEnsemble, normalise_scores
from gtplus_models.quality.metric import QualityMetric, create_quality_metric
from gtplus_models.quality.weights import (MissingWeightsError, gtplus_cache_dir, niqe_params_path,
                                           pyiqa_cache_dir)

__all__ = [
    'MissingWeightsError', 'QualityEnsemble', 'QualityMetric', 'create_quality_metric', 'gtplus_cache_dir',
    'niqe_params_path', 'normalise_scores', 'pyiqa_cache_dir'
]
