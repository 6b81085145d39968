"""NAFNet building blocks (written once, shared by the CFMG, ORNet and the restorer) and a NAFNet restorer.

After Chen et al., "Simple Baselines for Image Restoration" (ECCV 2022). Registered as ``GTPlusNAFNet`` so it
never collides with a ``NAFNet`` that another plugin registers.
"""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of [B,C,H,W] feature maps, with per-channel affine."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight.view(1, -1, 1, 1) * x + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split channels in two halves and multiply them: the non-linearity of NAFNet."""

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block: [LN, 1x1, dw3x3, gate, SCA, 1x1] and [LN, FFN-gate], both residual with
    learned zero-initialised scales (beta, gamma), so a fresh block is the identity.

    Args:
        channels (int): feature channels (in = out).
        dw_expand (int): expansion of the depthwise branch.
        ffn_expand (int): expansion of the feed-forward branch.
        drop_out_rate (float): dropout after each branch (0 in the restorer).
    """

    def __init__(self, channels, dw_expand=2, ffn_expand=2, drop_out_rate=0.):
        super().__init__()
        dw_channels = channels * dw_expand
        self.conv1 = nn.Conv2d(channels, dw_channels, 1)
        self.conv2 = nn.Conv2d(dw_channels, dw_channels, 3, padding=1, groups=dw_channels)
        self.conv3 = nn.Conv2d(dw_channels // 2, channels, 1)
        # simplified channel attention: global pooling + 1x1
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw_channels // 2, dw_channels // 2, 1))
        self.sg = SimpleGate()
        ffn_channels = ffn_expand * channels
        self.conv4 = nn.Conv2d(channels, ffn_channels, 1)
        self.conv5 = nn.Conv2d(ffn_channels // 2, channels, 1)
        self.norm1 = LayerNorm2d(channels)
        self.norm2 = LayerNorm2d(channels)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, inp):
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + self.dropout1(x) * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + self.dropout2(x) * self.gamma


def pad_to_multiple(x, multiple, official_padding=False):
    """Pad [B,C,H,W] on the bottom/right to multiples of ``multiple``.

    Reflect padding by default (replicate where the image is too small to reflect): zeros make a dark border that
    the U-Net spreads inward, and make tiled and whole-image results disagree. ``official_padding=True`` zero-pads
    as NAFNet's ``check_image_size`` does. Both give the same result when H and W are already multiples.

    Returns:
        tuple[Tensor, tuple[int, int]]: the padded tensor and the original (H, W), for cropping back.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        if official_padding:
            mode = 'constant'
        else:
            mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (height, width)


class NAFUNet(nn.Module):
    """The NAFNet U-Net, shared by :class:`GTPlusNAFNet` and ORNet.

    ``intro`` (3x3 conv in_channels→width); encoder levels (NAFBlocks + 2x2 stride-2 conv doubling the channels);
    middle blocks; decoder levels (1x1 conv + PixelShuffle(2) up, additive skip, NAFBlocks); ``ending`` (3x3 conv
    width→out_channels). Submodule names follow the official NAFNet / ORNet code, so their released state dicts load
    strictly. Subclasses add the padding, the conditioning and the global residual.

    Args:
        in_channels (int): channels into ``intro``.
        out_channels (int): channels out of ``ending``.
        width (int): channels at full resolution (doubled at each level down).
        enc_blk_nums (list[int]): NAFBlocks per encoder level.
        middle_blk_num (int): NAFBlocks at the bottom.
        dec_blk_nums (list[int]): NAFBlocks per decoder level (same length as enc_blk_nums).
        official_padding (bool): zero-pad to the multiple of 2^levels as the official code does; False
            reflect-pads (see :func:`pad_to_multiple`).
    """

    def __init__(self, in_channels, out_channels, width, enc_blk_nums, middle_blk_num, dec_blk_nums,
                 official_padding=False):
        super().__init__()
        self.official_padding = official_padding
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(f'enc_blk_nums {list(enc_blk_nums)} and dec_blk_nums {list(dec_blk_nums)} differ in '
                             'length')
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, out_channels, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        channels = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(channels) for _ in range(num)]))
            self.downs.append(nn.Conv2d(channels, 2 * channels, 2, 2))
            channels *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(channels) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(channels, channels * 2, 1, bias=False), nn.PixelShuffle(2)))
            channels //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(channels) for _ in range(num)]))
        self.padder_size = 2**len(enc_blk_nums)

    def unet(self, x):
        """[B,in_channels,H,W] (H, W multiples of ``padder_size``) -> [B,out_channels,H,W]."""
        x = self.intro(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)
        return self.ending(x)


@ARCH_REGISTRY.register()
class GTPlusNAFNet(NAFUNet):
    """NAFNet restorer for same-size restoration (denoising, deblurring). Defaults: the SIDD width-32 config.

    Registered as ``GTPlusNAFNet`` so it never collides with a ``NAFNet`` from another plugin; its state-dict keys
    are NAFNet's, so the official NAFNet-SIDD/GoPro checkpoints load strictly.

    Args:
        img_channel (int): image channels (3: RGB).
        width (int): channels at full resolution.
        middle_blk_num (int): NAFBlocks at the bottom.
        enc_blk_nums (list[int]): NAFBlocks per encoder level.
        dec_blk_nums (list[int]): NAFBlocks per decoder level.
        official_padding (bool): zero-pad odd sizes as the official NAFNet does (default: reflect).
    """

    def __init__(self, img_channel=3, width=32, middle_blk_num=12, enc_blk_nums=(2, 2, 4, 8),
                 dec_blk_nums=(2, 2, 2, 2), official_padding=False):
        super().__init__(img_channel, img_channel, width, list(enc_blk_nums), middle_blk_num, list(dec_blk_nums),
                         official_padding)

    def forward(self, inp):
        """
        Args:
            inp (Tensor): [B,C,H,W] RGB in [0,1], any H, W (padded to a multiple of 2^levels, then cropped).

        Returns:
            Tensor: [B,C,H,W] = inp + body(inp), not clamped.
        """
        x, (height, width) = pad_to_multiple(inp, self.padder_size, self.official_padding)
        return self.unet(x)[..., :height, :width] + inp
