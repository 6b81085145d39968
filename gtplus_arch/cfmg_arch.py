"""Conditional frequency mask generator (CFMG) of the enhanced-supervision method."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from gtplus_arch.frequency import amplitude_spectrum_log, frequency_mixup, masks_from_coefficients, ring_gaussian_basis
from gtplus_arch.nafnet_arch import NAFBlock, pad_to_multiple

# Entries of the released CFMG.pkl that its forward never uses (an unused decoder conv and ring-mask cache buffers);
# dropped on load so the official checkpoint loads with strict=True.
_UNUSED_OFFICIAL_KEYS = ('ending.weight', 'ending.bias', 'mask_height', 'mask_width', 'ring_mask')


@ARCH_REGISTRY.register()
class CFMG(nn.Module):
    """Predicts per-source ring-mask coefficients from the GT and a condition c, and mixes the sources with them.

    Input features (7 channels): the GT in [0,1], ``log10(|fftshift(fft2(GT))|+1)`` (3 channels) and a constant map
    of c, padded to a multiple of 2^num_levels. Network: conv3x3 7→width;
    num_levels × [NAFBlock + conv k2 s2] (32→64→128→256→512 with the defaults); NAFBlock; global average pool;
    Dropout, Linear→hidden, Dropout, Linear→S·num_bins; softmax over the S = N+1 sources. Masks
    ``M_i = softmax_i(Σ_b c[i,b]·R_b)`` use the ring basis of :mod:`gtplus_arch.frequency`. 3,237,752 parameters
    with the defaults. Submodule names follow the official code, so the released ``CFMG.pkl`` loads strictly.

    Args:
        num_sources (int): S = N+1 (the GT plus N SR variants). Official: 4.
        num_bins (int): rings in the basis. Official: 25.
        base_sigma (float): ring width at the centre. Official: 0.05.
        width (int): channels after the first conv. Official: 32.
        num_levels (int): downsampling levels (channels double at each). Official: 4.
        hidden (int): hidden units of the head. Official: 100.
        dropout (float): dropout before each Linear of the head. Official: 0.2.
        official_fftshift (bool): shift the GT spectrum over all axes, as the released code does; that rolls the
            batch and channel axes too (sample i sees sample i+B/2's spectrum, R sees B's). False (the fix) shifts
            the spatial axes only. True only to match released checkpoints.
        official_padding (bool): zero-pad the GT to the multiple of 2^num_levels before the features, as the released
            code does; False reflect-pads (see :func:`gtplus_arch.nafnet_arch.pad_to_multiple`).
        logit_norm (float | None): standardise the head's logits over sources and rings of each sample (zero mean,
            unit std), then scale them to this std, before the softmax over sources. Parameter-free, and unlike a
            clamp it keeps a gradient everywhere. The released code has no normalisation (None).
        logit_bound (float | None): squash the head's logits to (-bound, bound) with ``bound·tanh(logits/bound)``
            before the softmax over sources. The released code has no bound (None): trained with a strong fidelity
            term its logits run to hundreds, every ring's softmax saturates and the masks stop depending on c.
            Adds no parameter, so official checkpoints still load.
        cond_head (bool): also feed c to the head: ``fclayer_1(x) + cond_embed(c)`` (a new ``Linear(1, hidden)``,
            zero-initialised so training starts from the released behaviour). In the released network c is one
            constant input map among seven, which the first NAFBlock's channel LayerNorm and the global pooling
            largely wash out. Adds the ``cond_embed`` parameters: official checkpoints load with ``strict_load_g:
            false`` (the new layer keeps its zero start).
    """

    def __init__(self, num_sources=4, num_bins=25, base_sigma=0.05, width=32, num_levels=4, hidden=100, dropout=0.2,
                 official_fftshift=False, official_padding=False, logit_norm=None, logit_bound=None,
                 cond_head=False):
        super().__init__()
        self.logit_norm = None if logit_norm is None else float(logit_norm)
        if logit_bound is not None and not float(logit_bound) > 0:
            raise ValueError(f'logit_bound must be a positive number or None, got {logit_bound!r}')
        self.logit_bound = None if logit_bound is None else float(logit_bound)
        self.official_padding = official_padding
        self.num_sources, self.num_bins, self.base_sigma = num_sources, num_bins, base_sigma
        self.official_fftshift = official_fftshift
        self.intro = nn.Conv2d(7, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        channels = width
        for _ in range(num_levels):
            self.encoders.append(nn.Sequential(NAFBlock(channels)))
            self.downs.append(nn.Conv2d(channels, channels * 2, 2, 2))
            channels *= 2
        self.middle_blks = nn.Sequential(NAFBlock(channels))
        self.dropout_1 = nn.Dropout(dropout)
        self.fclayer_1 = nn.Linear(channels, hidden)
        self.dropout_2 = nn.Dropout(dropout)
        self.fclayer_last = nn.Linear(hidden, num_sources * num_bins)
        self.cond_embed = None
        if cond_head:
            self.cond_embed = nn.Linear(1, hidden)
            nn.init.zeros_(self.cond_embed.weight)
            nn.init.zeros_(self.cond_embed.bias)
        self.padder_size = 2**num_levels
        self.last_logits = None
        self.register_load_state_dict_pre_hook(_drop_unused_official_keys)

    def coefficients(self, gt, cond):
        """Ring coefficients ``c[i,b]``.

        Args:
            gt (Tensor): [B,3,H,W] RGB in [0,1].
            cond (Tensor | float): c in [0,1], a [B] tensor or a scalar.

        Returns:
            Tensor: [B, S, num_bins], a softmax over S.
        """
        return torch.softmax(self.logits(gt, cond), dim=1)

    def logits(self, gt, cond):
        """The head's pre-softmax logits (bounded when ``logit_bound`` is set).

        Args:
            gt (Tensor): [B,3,H,W] RGB in [0,1].
            cond (Tensor | float): c in [0,1], a [B] tensor or a scalar.

        Returns:
            Tensor: [B, S, num_bins].
        """
        batch = gt.shape[0]
        x, _ = pad_to_multiple(gt, self.padder_size, self.official_padding)
        cond = torch.as_tensor(cond, dtype=gt.dtype, device=gt.device).reshape(-1, 1, 1, 1)
        cond_map = cond.expand(batch, 1, *x.shape[-2:])
        x = self.intro(torch.cat([x, amplitude_spectrum_log(x, self.official_fftshift), cond_map], dim=1))
        for encoder, down in zip(self.encoders, self.downs):
            x = down(encoder(x))
        x = self.middle_blks(x).mean(dim=(2, 3))
        hidden = self.fclayer_1(self.dropout_1(x))
        if self.cond_embed is not None:
            hidden = hidden + self.cond_embed(cond.reshape(-1, 1).expand(batch, 1))
        logits = self.fclayer_last(self.dropout_2(hidden)).view(batch, self.num_sources, self.num_bins)
        if self.logit_norm is not None:
            flat = logits.reshape(batch, -1)
            logits = self.logit_norm * (logits - flat.mean(1).view(-1, 1, 1)) / (flat.std(1).view(-1, 1, 1) + 1e-6)
        if self.logit_bound is not None:
            logits = self.logit_bound * torch.tanh(logits / self.logit_bound)
        # Kept (detached) for diagnostics: CFMGModel logs their range, where saturation shows first.
        self.last_logits = logits.detach()
        return logits

    def predict_masks(self, gt, cond):
        """Frequency masks for the sources.

        Args:
            gt (Tensor): [B,3,H,W] RGB in [0,1].
            cond (Tensor | float): c in [0,1], a [B] tensor or a scalar.

        Returns:
            Tensor: [B, S, H, W] in the centred layout (DC in the middle), summing to 1 over S.
        """
        basis = ring_gaussian_basis(gt.shape[-2], gt.shape[-1], self.num_bins, self.base_sigma, gt.device, gt.dtype)
        return masks_from_coefficients(self.coefficients(gt, cond), basis)

    def forward(self, gt, sources, cond):
        """
        Args:
            gt (Tensor): [B,3,H,W] RGB in [0,1].
            sources (Tensor): [B,S,3,H,W] RGB in [0,1]; sources[:, 0] is the GT, the rest its SR variants.
            cond (Tensor | float): c in [0,1], a [B] tensor or a scalar.

        Returns:
            tuple[Tensor, Tensor]: the enhanced GT Î(c) [B,3,H,W] (not clamped: the mixup can overshoot [0,1]
            slightly; callers clamp when they need an image) and the masks [B,S,H,W].
        """
        if sources.shape[1] != self.num_sources:
            raise ValueError(f'CFMG was built for {self.num_sources} sources, got {sources.shape[1]}')
        masks = self.predict_masks(gt, cond)
        return frequency_mixup(sources, masks), masks


def _drop_unused_official_keys(module, state_dict, prefix, *args):
    for key in _UNUSED_OFFICIAL_KEYS:
        state_dict.pop(prefix + key, None)
