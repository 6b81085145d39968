"""Pieces shared by the enhanced-supervision models and tools (CFMG training, ORNet training, enhance-gt, refine).

Tensors are RGB float in [0,1]. ``sources`` is always Tensor[B, N+1, 3, H, W] with ``sources[:, 0]`` the GT and
``sources[:, 1:]`` its N super-resolved variants at GT size.
"""
import torch

from gtplus_arch.ornet_arch import DEFAULT_COND  # noqa: F401  (the one default c; imported from here by models/tools)


def stack_sources(gt, variants):
    """GT [B,3,H,W] and variants [B,N,3,H,W] -> sources [B,N+1,3,H,W] (GT first, as the CFMG expects)."""
    if variants.dim() != 5 or variants.shape[0] != gt.shape[0] or variants.shape[2:] != gt.shape[1:]:
        raise ValueError(f'variants must be [B,N,C,H,W] matching gt {tuple(gt.shape)}, got {tuple(variants.shape)}')
    return torch.cat([gt.unsqueeze(1), variants], dim=1)


def draw_condition(batch, device, per_sample, generator=None):
    """c ~ U(0,1): one value for the whole step (shape [B], all equal) or one per sample (shape [B])."""
    if per_sample:
        return torch.rand(batch, device=device, generator=generator)
    return torch.rand((), device=device, generator=generator).expand(batch).contiguous()


def condition_tensor(cond, batch, device):
    """A float, a 0-d or a [B] tensor -> Tensor[B] on ``device``."""
    cond = torch.as_tensor(cond, dtype=torch.float32, device=device)
    return cond.expand(batch).contiguous() if cond.dim() == 0 else cond


def enhance(cfmg, gt, sources, cond):
    """Run the CFMG: masks from (GT, c), then the frequency mixup of the sources.

    Args:
        cfmg (nn.Module): a CFMG.
        gt (Tensor): [B,3,H,W] in [0,1].
        sources (Tensor): [B,N+1,3,H,W] in [0,1], sources[:, 0] == gt.
        cond (float | Tensor): c in [0,1], scalar or [B].

    Returns:
        tuple[Tensor, Tensor]: enhanced GT Î(c) [B,3,H,W] (not clamped) and masks [B,N+1,H,W].
    """
    return cfmg(gt, sources, condition_tensor(cond, gt.shape[0], gt.device))
