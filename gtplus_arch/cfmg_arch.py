"""Conditional frequency mask generator (CFMG) of the enhanced-supervision method."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from gtplus_arch.frequency import frequency_mixup, log_amplitude, masks_from_coefficients, ring_gaussian_basis
from gtplus_arch.nafnet_arch import NAFBlock


@ARCH_REGISTRY.register()
class CFMG(nn.Module):
    """Predicts, from the GT and a condition c, per-source ring-mask coefficients, and mixes the sources with them.

    Input features (7 channels): the GT in [0,1], ``log10(|fftshift(fft2(GT))|+1)`` and a constant map of c.
    Network: conv3x3 7→width; ``len(widths)`` × [NAFBlock + conv k2 s2]; NAFBlock; global average pool; Dropout,
    Linear→hidden, Dropout, Linear→S·num_bins; softmax over the S = N+1 sources. About 3.2M parameters with the
    official defaults.

    Args:
        num_sources (int): S = N+1 (the GT plus N SR variants). Official: 4.
        num_bins (int): rings in the basis. Official: 25.
        base_sigma (float): ring width at the centre. Official: 0.05.
        width (int): channels after the first conv. Official: 32 (then 64, 128, 256, 512).
        num_levels (int): downsampling levels. Official: 4.
        hidden (int): hidden units of the head. Official: 100.
        dropout (float): dropout of the head. Official: 0.2.
        official_fftshift (bool): shift the spectrum over all axes, as the released code does (mixes the samples
            of a batch); False shifts the spatial axes only. Keep True only to match released checkpoints.
    """

    def __init__(self, num_sources=4, num_bins=25, base_sigma=0.05, width=32, num_levels=4, hidden=100, dropout=0.2,
                 official_fftshift=False):
        super().__init__()
        self.num_sources, self.num_bins, self.base_sigma = num_sources, num_bins, base_sigma
        self.official_fftshift = official_fftshift
        self.intro = nn.Conv2d(7, width, 3, padding=1)
        layers, channels = [], width
        for _ in range(num_levels):
            layers += [NAFBlock(channels), nn.Conv2d(channels, channels * 2, 2, 2)]
            channels *= 2
        layers.append(NAFBlock(channels))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(channels, hidden), nn.Dropout(dropout),
            nn.Linear(hidden, num_sources * num_bins))

    def coefficients(self, gt, cond):
        """
        Args:
            gt (Tensor): [B,3,H,W] RGB in [0,1].
            cond (Tensor): [B] (or a float), c in [0,1].

        Returns:
            Tensor: [B, S, num_bins], a softmax over S.
        """
        batch, _, height, width = gt.shape
        cond = torch.as_tensor(cond, dtype=gt.dtype, device=gt.device).reshape(-1, 1, 1, 1)
        cond_map = cond.expand(batch, 1, height, width)
        x = torch.cat([gt, log_amplitude(gt, self.official_fftshift), cond_map], dim=1)
        x = self.features(self.intro(x)).mean(dim=(2, 3))
        logits = self.head(x).view(batch, self.num_sources, self.num_bins)
        return torch.softmax(logits, dim=1)

    def predict_masks(self, gt, cond):
        """Masks [B, S, H, W] (centred layout), summing to 1 over the sources."""
        basis = ring_gaussian_basis(gt.shape[-2], gt.shape[-1], self.num_bins, self.base_sigma, gt.device, gt.dtype)
        return masks_from_coefficients(self.coefficients(gt, cond), basis)

    def forward(self, gt, sources, cond):
        """
        Args:
            gt (Tensor): [B,3,H,W] RGB in [0,1].
            sources (Tensor): [B,S,3,H,W] in [0,1]; sources[:, 0] is the GT.
            cond (Tensor | float): c in [0,1], [B] or scalar.

        Returns:
            tuple[Tensor, Tensor]: enhanced GT Î(c) [B,3,H,W] (not clamped) and masks [B,S,H,W].
        """
        if sources.shape[1] != self.num_sources:
            raise ValueError(f'CFMG was built for {self.num_sources} sources, got {sources.shape[1]}')
        masks = self.predict_masks(gt, cond)
        return frequency_mixup(sources, masks), masks
