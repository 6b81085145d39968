"""Output Refinement Network (ORNet): a c-conditioned NAFNet-style U-Net that runs after any restorer."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from gtplus_arch.nafnet_arch import NAFUNet, pad_to_multiple

# The one home of the default c: the value the official test code hard-codes. Models (val.cond), tools and the
# command line (--cond) import it from here through gtplus_models.enhanced_supervision.
DEFAULT_COND = 0.3

# name -> (width, enc_blk_nums, middle_blk_num, dec_blk_nums). 'official' is the released configuration
# (17.9M parameters); the lighter ones trade quality for speed (README: benchmarks/bench_ornet.py for costs,
# benchmarks/bench_ornet_quality.py for what each keeps of the official configuration's gain). 'light' is the
# lightest preset on purpose: a width-8 variant ran at 0.05x the restorer but lost the whole NIQE gain in the
# quickstart, so it is not offered as a preset (build it with explicit width/blocks if wanted).
ORNET_PRESETS = {
    'official': (64, [1, 1, 1, 1], 1, [1, 1, 1, 1]),
    'small': (32, [1, 1, 1, 1], 1, [1, 1, 1, 1]),
    'light': (16, [1, 1, 1], 1, [1, 1, 1]),
}


@ARCH_REGISTRY.register()
class ORNet(NAFUNet):
    """Refines a restored image towards the enhanced GT at strength c.

    The input image is padded to a multiple of 2^levels (16 for the official 4 levels), a constant c map is added
    (4 channels in all), the U-Net runs and the result is cropped back; output = input + U-Net (global residual).
    State-dict keys are the official ORNet's (``intro``, ``encoders``, ..., ``ending``), so ``ORNet.pkl`` loads.

    Args:
        img_channel (int): image channels (3: RGB); the U-Net sees img_channel + 1 (the c map).
        width (int): channels at full resolution. Official: 64.
        enc_blk_nums (list[int]): NAFBlocks per encoder level. Official: [1, 1, 1, 1].
        middle_blk_num (int): NAFBlocks at the bottom. Official: 1.
        dec_blk_nums (list[int]): NAFBlocks per decoder level. Official: [1, 1, 1, 1].
        preset (str | None): one of ``ORNET_PRESETS`` ('official', 'small', 'light'); when given it
            overrides the four shape arguments.
        official_padding (bool): zero-pad odd sizes as the official code does (default: reflect).
    """

    def __init__(self, img_channel=3, width=64, enc_blk_nums=(1, 1, 1, 1), middle_blk_num=1,
                 dec_blk_nums=(1, 1, 1, 1), preset=None, official_padding=False):
        if preset is not None:
            if preset not in ORNET_PRESETS:
                raise ValueError(f"Unknown ORNet preset '{preset}'; choose from {sorted(ORNET_PRESETS)}")
            width, enc_blk_nums, middle_blk_num, dec_blk_nums = ORNET_PRESETS[preset]
        super().__init__(img_channel + 1, img_channel, width, list(enc_blk_nums), middle_blk_num,
                         list(dec_blk_nums), official_padding)

    def forward(self, x, cond=DEFAULT_COND):
        """
        Args:
            x (Tensor): [B,3,H,W] RGB in [0,1], any H, W.
            cond (Tensor | float): c in [0,1], a [B] tensor or a scalar (default :data:`DEFAULT_COND`, 0.3, the
                value the official test code hard-codes).

        Returns:
            Tensor: [B,3,H,W], not clamped.
        """
        batch, _, height, width = x.shape
        cond = torch.as_tensor(cond, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        # Pad the image, then fill c over the padded size (as the official code does): zero-padding the
        # concatenation would put c = 0 in the margin.
        padded, _ = pad_to_multiple(x, self.padder_size, self.official_padding)
        cond_map = cond.expand(batch, 1, *padded.shape[-2:])
        out = self.unet(torch.cat([padded, cond_map], dim=1))
        return out[..., :height, :width] + x
