"""Output Refinement Network (ORNet): a c-conditioned NAFNet-style U-Net that runs after any restorer."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from gtplus_arch.nafnet_arch import NAFUNet, pad_to_multiple

# name -> (width, enc_blk_nums, middle_blk_num, dec_blk_nums). 'official' is the released configuration (17.9M).
ORNET_PRESETS = {
    'official': (64, [1, 1, 1, 1], 1, [1, 1, 1, 1]),
    'small': (32, [1, 1, 1, 1], 1, [1, 1, 1, 1]),
    'light': (16, [1, 1, 1], 1, [1, 1, 1]),
    'tiny': (8, [1, 1, 1], 1, [1, 1, 1]),
}


@ARCH_REGISTRY.register()
class ORNet(NAFUNet):
    """Refines a restored image towards the enhanced GT at strength c.

    Input: the image [B,3,H,W] RGB in [0,1] plus a constant c map (4 channels in all), padded to a multiple of
    2^levels (16 for the official 4 levels) and cropped back. Output = input + body (global residual).

    Args:
        img_channel (int): image channels.
        width, enc_blk_nums, middle_blk_num, dec_blk_nums: the U-Net; defaults are the official ORNet.
        preset (str | None): one of ORNET_PRESETS; overrides the four shape arguments.
    """

    def __init__(self, img_channel=3, width=64, enc_blk_nums=(1, 1, 1, 1), middle_blk_num=1,
                 dec_blk_nums=(1, 1, 1, 1), preset=None):
        if preset is not None:
            if preset not in ORNET_PRESETS:
                raise ValueError(f"Unknown ORNet preset '{preset}'; choose from {sorted(ORNET_PRESETS)}")
            width, enc_blk_nums, middle_blk_num, dec_blk_nums = ORNET_PRESETS[preset]
        super().__init__(width, list(enc_blk_nums), middle_blk_num, list(dec_blk_nums))
        self.intro = nn.Conv2d(img_channel + 1, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)

    def forward(self, x, cond=0.3):
        """
        Args:
            x (Tensor): [B,3,H,W] RGB in [0,1].
            cond (Tensor | float): c in [0,1], [B] or scalar. 0.3 is the official test-time value.

        Returns:
            Tensor: [B,3,H,W] (not clamped).
        """
        batch, _, height, width = x.shape
        cond = torch.as_tensor(cond, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        inp = torch.cat([x, cond.expand(batch, 1, height, width)], dim=1)
        inp, _ = pad_to_multiple(inp, self.padder_size)
        out = self.ending(self.unet(self.intro(inp)))
        return out[..., :height, :width] + x
