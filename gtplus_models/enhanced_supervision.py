"""Pieces shared by the enhanced-supervision models and tools (CFMG training, ORNet training, enhance-gt, refine).

Tensors are RGB float in [0,1]. ``sources`` is always Tensor[B, N+1, 3, H, W] with ``sources[:, 0]`` the GT and
``sources[:, 1:]`` its N super-resolved variants at GT size.
"""
import os.path as osp

import torch

# c used in validation, testing and the tools when none is given (0.3, the value the official test code hard-codes).
# Its one home is the arch, whose forward default it also is; everything above the arch imports it from here.
from gtplus_arch.ornet_arch import DEFAULT_COND  # noqa: F401

# The official code computes its losses on [-1,1] tensors; gtplus works on [0,1]. An image difference on [-1,1] is
# twice the one on [0,1], so the official MSE is 4x and the official L1 2x the same loss on [0,1]. These weights keep
# the official balance between fidelity and the quality reward (CFMG) and the official step size (ORNet).
OFFICIAL_MSE_WEIGHT = 4.0
OFFICIAL_L1_WEIGHT = 2.0

# CFMGModel's fidelity loss when ``train.fidelity_opt`` is not given: the official MSE, rescaled to [0,1].
DEFAULT_FIDELITY_OPT = {'type': 'MSELoss', 'loss_weight': OFFICIAL_MSE_WEIGHT, 'reduction': 'mean'}
# ORNetModel's pixel loss when ``train.pixel_opt`` is not given: the official L1, rescaled to [0,1].
DEFAULT_PIXEL_OPT = {'type': 'L1Loss', 'loss_weight': OFFICIAL_L1_WEIGHT, 'reduction': 'mean'}
# ORNetModel: the official code draws one c per step (``train.cond_per_sample``) and compares clamp(ORNet(x), 0, 1)
# with the target (``train.clamp_output``).
DEFAULT_COND_PER_SAMPLE = False
DEFAULT_CLAMP_OUTPUT = True

# The name of the released CFMG checkpoint; it was trained with the all-axes fftshift (``official_fftshift: true``).
OFFICIAL_CFMG_FILENAME = 'CFMG.pkl'


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


def official_cfmg_shift_warning(network_opt, weights_path, key):
    """A warning text when ``weights_path`` looks like the released CFMG.pkl but the CFMG shifts the spatial axes only.

    The released checkpoint was trained with the all-axes fftshift; with the fix its spectral input changes and the
    masks (hence the targets) silently differ from the official ones. Only the file name is looked at, so a
    checkpoint of one's own saved under that name is possible: callers warn, they do not refuse.

    Args:
        network_opt (dict): the ``network_*`` options of the CFMG (``{'type': 'CFMG', ...}``).
        weights_path (str | None): the checkpoint about to be loaded.
        key (str): the option key of ``weights_path``, named in the text.

    Returns:
        str | None: the warning, or None when there is nothing to say.
    """
    if not weights_path or (network_opt or {}).get('type') != 'CFMG' or network_opt.get('official_fftshift'):
        return None
    if osp.basename(str(weights_path)).lower() != OFFICIAL_CFMG_FILENAME.lower():
        return None
    return (f'{key} is {weights_path}, named like the released {OFFICIAL_CFMG_FILENAME}, but official_fftshift is '
            'false: the released CFMG was trained with the all-axes fftshift, so its masks differ without it. Set '
            'official_fftshift: true in the CFMG network options to reproduce the official targets.')
