"""ScoreConditionedRestorer: IQPIR's quality conditioning as a plug-in for any registered restorer.

IQPIR (METHODS.md §2) adds ``nn.Embedding(num_bins, ...)[bin(s)]`` to a latent so that a target quality score s
steers the restoration, and calls this "a plug-and-play enhancement compatible with existing restoration
architectures without structural modification". Here that is literal: the restorer (any ``ARCH_REGISTRY`` network,
built from its own option mapping) is left as it is, and a forward hook on one of its submodules adds a per-channel
shift ``score_embed[bin(s)]`` to that submodule's output, a conditional bias. The embedding starts at zero, so a
freshly wrapped pretrained restorer computes exactly what the bare one does, whatever the score.
"""
import math

import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from gtplus_arch.iqpir_arch import _check_score, score_bin

# The shift travels on the hooked submodule itself (set just before, cleared just after the restorer's forward), not
# in a closure over the wrapper: DataParallel replicas then each read their own replica's shift.
_SHIFT_ATTR = '_gtplus_score_shift'
PROBE_SIZE = 32  # side of the dry-run input that finds the feature's channels (rounded up to the window grid)


def _add_score_shift(module, inputs, output):
    """Forward hook: ``output + shift`` broadcast per channel; nothing while no score is set.

    Feature maps [B,C,H,W] get ``shift[:, :, None, None]``; token sequences [B,N,C] (the layers of SwinIR, HAT)
    get ``shift[:, None, :]``.
    """
    shift = getattr(module, _SHIFT_ATTR, None)
    if shift is None:
        return None
    if not torch.is_tensor(output) or output.dim() not in (3, 4):
        kind = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
        raise ValueError(f'ScoreConditionedRestorer: the hooked feature must output a [B,C,H,W] or [B,N,C] tensor, '
                         f'got {kind}; choose another feature')
    channels = output.shape[1] if output.dim() == 4 else output.shape[-1]
    if channels != shift.shape[1] or output.shape[0] != shift.shape[0]:
        raise ValueError(f'ScoreConditionedRestorer: the hooked feature outputs {tuple(output.shape)}, but the '
                         f'score embedding is [{shift.shape[0]}, {shift.shape[1]}] (batch, channels); set channels '
                         'to the feature\'s channel count')
    shift = shift.to(output.dtype)
    return output + (shift[:, :, None, None] if output.dim() == 4 else shift[:, None, :])


def _probe_channels(restorer, module, feature):
    """The channel count of ``module``'s output, from one dry run of ``restorer`` on a zero RGB image.

    Runs in eval mode without gradients (BatchNorm statistics and RNG streams are untouched) on a [1,3,S,S] input,
    S = PROBE_SIZE rounded up to a multiple of every integer ``window_size`` in the restorer (windowed
    transformers); U-Nets such as NAFNet pad themselves.
    """
    windows = [m.window_size for m in restorer.modules() if isinstance(getattr(m, 'window_size', None), int)]
    multiple = math.lcm(*windows) if windows else 1
    size = -(-PROBE_SIZE // multiple) * multiple
    seen = []

    def record(_module, _inputs, output):
        seen.append(output)

    handle = module.register_forward_hook(record)
    was_training = restorer.training
    restorer.eval()
    try:
        with torch.no_grad():
            param = next(restorer.parameters(), None)
            device = param.device if param is not None else 'cpu'
            restorer(torch.zeros(1, 3, size, size, device=device))
    except Exception as err:  # noqa: BLE001  (any failure of a foreign arch: say what to do instead)
        raise ValueError(f'ScoreConditionedRestorer: the dry run that finds the channels of {feature!r} failed '
                         f'({type(err).__name__}: {err}); set channels explicitly') from err
    finally:
        handle.remove()
        restorer.train(was_training)
    if not seen:
        raise ValueError(f'ScoreConditionedRestorer: {feature!r} is never called in the restorer\'s forward; choose '
                         'another feature')
    output = seen[0]
    if not torch.is_tensor(output) or output.dim() not in (3, 4):
        kind = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
        raise ValueError(f'ScoreConditionedRestorer: {feature!r} outputs {kind}, not a [B,C,H,W] or [B,N,C] tensor; '
                         'choose another feature')
    return int(output.shape[1] if output.dim() == 4 else output.shape[-1])


@ARCH_REGISTRY.register()
class ScoreConditionedRestorer(nn.Module):
    """Any restorer, conditioned on a target quality score by a per-channel shift of one of its features.

    ``forward(x, score)`` runs the restorer unchanged, except that the output of submodule ``feature`` gets
    ``score_embed(bin(score))`` added per channel (``bin = floor(num_bins * s)``, 1.0 in the top bin: the rule of
    :func:`gtplus_arch.iqpir_arch.score_bin`). The hook fires on every call of that submodule.

    State dict: the restorer's own keys under ``restorer.`` and ``score_embed.weight`` [num_bins, channels]. The
    embedding is zero-initialised, so wrapping a pretrained restorer changes nothing until training moves it. To
    start from a bare restorer checkpoint: :meth:`load_restorer_state_dict` here, or
    ``path.pretrain_restorer`` in :class:`gtplus_models.score_conditioned_model.ScoreConditionedModel`
    (``path.pretrain_network_g`` expects this wrapper's own keys).

    Tiled inference (``gtplus_models.tools.tiling.size_rule``) sees the restorer's ``scale``, ``upscale``,
    ``size_multiple``, ``padder_size`` and ``check_image_size`` here when the restorer has them, and its window
    sizes among this module's submodules.

    Args:
        restorer (dict): the restorer's network mapping, e.g. ``{type: GTPlusNAFNet, width: 32}`` or
            ``{type: MSRResNet, upscale: 4}``; built with basicsr's ``build_network`` (any registered arch).
        feature (str): dotted name of a restorer submodule, as in ``restorer.named_modules()`` (e.g.
            ``middle_blks`` for NAFNet, ``body`` for MSRResNet / RRDBNet, ``conv_after_body`` for SwinIR), whose
            output ([B,C,H,W], or [B,N,C] tokens) is shifted. Unknown names are a ValueError listing valid ones.
        num_bins (int): score bins over [0,1] (IQPIR: 10).
        channels (int | None): the feature's channel count. None finds it at construction by one dry run of the
            restorer on a [1,3,32,32] zero image with a hook on the feature (eval mode, no gradients); give it to
            skip the dry run (e.g. for a restorer that cannot run on 32x32 RGB). Inferring it on the first real
            forward instead would leave the embedding unbuilt when a state dict is loaded, so it is not done.
    """

    def __init__(self, restorer, feature, num_bins=10, channels=None):
        super().__init__()
        if not isinstance(restorer, dict) or 'type' not in restorer:
            raise ValueError(f'restorer must be a network mapping with a type (e.g. {{type: GTPlusNAFNet}}), '
                             f'got {restorer!r}')
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f'num_bins must be an integer >= 1, got {num_bins!r}')
        self.restorer = build_network(dict(restorer))
        modules = dict(self.restorer.named_modules())
        if not isinstance(feature, str) or not feature or feature not in modules:
            names = sorted((name for name in modules if name), key=lambda name: name.count('.'))  # shallow first
            more = f', ... ({len(names)} in all)' if len(names) > 12 else ''
            raise ValueError(f'feature {feature!r} is not a submodule of {type(self.restorer).__name__}; valid names '
                             f'include: {", ".join(names[:12])}{more}')
        self.feature = feature
        self.num_bins = num_bins
        if channels is None:
            channels = _probe_channels(self.restorer, modules[feature], feature)
        elif isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f'channels must be an integer >= 1 or None, got {channels!r}')
        self.channels = channels
        self.score_embed = nn.Embedding(num_bins, channels)
        nn.init.zeros_(self.score_embed.weight)  # a fresh wrapper is the bare restorer, bit for bit
        modules[feature].register_forward_hook(_add_score_shift)
        # Passthrough of what tiling and basicsr's SR tools read off a network (only those the restorer has: the
        # tiling rule tests hasattr(net, 'padder_size')).
        for name in ('scale', 'upscale', 'size_multiple', 'padder_size'):
            if hasattr(self.restorer, name) and not isinstance(getattr(self.restorer, name), (nn.Module, torch.Tensor)):
                setattr(self, name, getattr(self.restorer, name))
        if callable(getattr(self.restorer, 'check_image_size', None)):
            self.check_image_size = self.restorer.check_image_size

    def score_bin(self, score):
        """[B] scores in [0,1] -> [B] int64 bins in [0, num_bins) (:func:`gtplus_arch.iqpir_arch.score_bin`)."""
        return score_bin(score, self.num_bins)

    def load_restorer_state_dict(self, state_dict, strict=True):
        """Load a bare restorer's state dict (keys without the ``restorer.`` prefix) into the wrapped restorer.

        The score embedding is left as it is (zero when fresh). DDP's ``module.`` prefix is stripped.

        Args:
            state_dict (dict[str, Tensor]): e.g. ``torch.load('MSRResNet.pth')['params']``.
            strict (bool): as ``nn.Module.load_state_dict``.

        Returns:
            NamedTuple: missing and unexpected keys, as ``load_state_dict``.
        """
        state = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state_dict.items()}
        return self.restorer.load_state_dict(state, strict=strict)

    def forward(self, x, score=None):
        """
        Args:
            x (Tensor): [B,3,H,W] RGB in [0,1] (whatever the restorer takes).
            score (Tensor | float | None): [B] or one number in [0,1], the target quality (1 = best); None runs the
                bare restorer (no conditioning).

        Returns:
            Tensor: the restorer's output, e.g. [B,3,sH,sW] RGB, nominally [0,1], not clamped.

        Raises:
            ValueError: a score outside [0,1] (or NaN), or not one per sample.
        """
        if score is None:
            return self.restorer(x)
        score = _check_score(score, x.shape[0], x.device)
        shift = self.score_embed(self.score_bin(score))  # [B, channels]
        module = self.restorer.get_submodule(self.feature)
        setattr(module, _SHIFT_ATTR, shift)
        try:
            return self.restorer(x)
        finally:
            setattr(module, _SHIFT_ATTR, None)  # a later direct call of the restorer is unconditioned
