"""NR-IQA as a training signal, through the quality adapter (the one door to pyiqa)."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn


def parse_metric_entries(metrics):
    """Normalise ``metrics`` from YAML: a list of names or of ``{name, weight, weights_path}`` mappings.

    Returns:
        list[dict]: entries with keys name, weight (float, default 1.0), weights_path (str | None).
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise ValueError(f'metrics must be a non-empty list of names or {{name, weight, weights_path}}, got {metrics!r}')
    entries = []
    for entry in metrics:
        entry = {'name': entry} if isinstance(entry, str) else dict(entry)
        if 'name' not in entry:
            raise ValueError(f'metric entry {entry!r} has no name')
        entries.append({'name': entry.pop('name'), 'weight': float(entry.pop('weight', 1.0)),
                        'weights_path': entry.pop('weights_path', None), 'kwargs': entry})
    return entries


@LOSS_REGISTRY.register()
class GTPlusQualityReward(nn.Module):
    """Weighted sum of differentiable IQA scores, signed so that larger always means better.

    ``reward = Σ_k w_k · s_k · IQA_k(img)`` with ``s_k = +1`` for higher-is-better metrics (MUSIQ, TOPIQ, MANIQA)
    and ``-1`` for lower-is-better ones (NIQE). A model maximises it (subtracts it from its loss).

    Args:
        metrics (list[str | dict]): e.g. ``[{name: niqe, weight: 0.1}]`` or
            ``[{name: topiq_nr, weight: 0.1, weights_path: /weights/topiq_nr.pth}]``.
        device (str): where the IQA networks run ('cpu' or 'cuda'); models move the module themselves.
    """

    def __init__(self, metrics, device='cpu'):
        super().__init__()
        from gtplus_models.quality import create_quality_metric
        self.entries = parse_metric_entries(metrics)
        self.iqa = nn.ModuleList([
            create_quality_metric(e['name'], weights_path=e['weights_path'], as_loss=True, device=device,
                                  **e['kwargs']) for e in self.entries
        ])
        for param in self.iqa.parameters():
            param.requires_grad_(False)  # frozen judges: gradients reach the image only

    def forward(self, img, ref=None):
        """
        Args:
            img (Tensor): [B,3,H,W] RGB in [0,1] (clamp before calling; pyiqa always receives [0,1]).
            ref (Tensor | None): [B,3,H,W] reference in [0,1] for full-reference metrics (LPIPS, DISTS), whose
                distance then counts as a negative reward.

        Returns:
            tuple[Tensor, dict]: the scalar reward (batch mean) and each metric's raw batch-mean score (detached).
        """
        reward = img.new_zeros(())
        raw = {}
        for entry, metric in zip(self.entries, self.iqa):
            score = metric(img, ref).mean()
            raw[entry['name']] = score.detach()
            sign = -1.0 if metric.lower_better else 1.0
            reward = reward + entry['weight'] * sign * score
        return reward, raw


def quality_fidelity_loss(fidelity, reward, cond):
    """The CFMG objective ``(1 - c²)·fidelity - c²·reward`` (paper: ``(1-λ)·L_rec + λ·L_percep`` with λ = c²).

    Args:
        fidelity (Tensor): scalar fidelity loss (MSE to the GT).
        reward (Tensor): scalar quality reward (larger is better).
        cond (Tensor | float): the step's condition c in [0,1].
    """
    weight = torch.as_tensor(cond, dtype=fidelity.dtype, device=fidelity.device)**2
    return (1 - weight) * fidelity - weight * reward
