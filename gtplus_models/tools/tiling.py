"""Tiled inference, so that a restorer + ORNet chain runs on images larger than memory allows, and the one rule for
the input sizes a network accepts (:func:`size_rule`): windowed transformers (SwinIR, HAT) need multiples of their
window, and are padded here and cropped back, tiled or not, as basicsr's own SwinIR test does.
"""
import math

import torch
from torch import nn

from gtplus_arch.nafnet_arch import pad_to_multiple


def tile_starts(length, tile, stride):
    """Start offsets covering [0, length) with tiles of ``tile`` pixels, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def check_tiling(tile, tile_pad):
    """Refuse a negative ``--tile`` (it once wrote all-black images) or ``--tile-pad`` before any output exists."""
    for flag, value in (('--tile', tile), ('--tile-pad', tile_pad)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f'{flag} must be an integer >= 0, got {value!r}')


def size_rule(net):
    """The input sizes ``net`` accepts, as (multiple, align).

    - ``multiple``: inputs are padded (reflect, at the bottom and right) to a multiple of this, and the output is
      cropped back (times the scale of an upscaling network). It is the network's own ``size_multiple`` attribute if
      it declares one; else the least common multiple of every integer ``window_size`` in its modules (SwinIR and HAT
      blocks: windows must tile the image); else, for basicsr's ``RRDBNet`` at scale 1 or 2, the 4 or 2 pixels that
      its pixel-unshuffle folds into channels; else 1. Networks that pad themselves (a ``padder_size`` as NAFNet,
      ORNet and CFMG have, or a ``check_image_size`` method as the official SwinIR has) get 1.
    - ``align``: tile origins are rounded down to multiples of this (the window grid, or a U-Net's 2^levels), so
      that tiles see the same grid as the whole image.

    Args:
        net (nn.Module): the network.

    Returns:
        tuple[int, int]: (multiple, align), both >= 1.
    """
    multiple = getattr(net, 'size_multiple', None)
    if not multiple:
        windows = {m.window_size for m in net.modules() if isinstance(getattr(m, 'window_size', None), int)}
        multiple = math.lcm(*windows) if windows else 1
    if multiple == 1 and type(net).__name__ == 'RRDBNet' and getattr(net, 'scale', None) in (1, 2):
        multiple = 4 // net.scale
    padder = getattr(net, 'padder_size', 1)
    align = math.lcm(int(multiple), int(padder))
    if hasattr(net, 'padder_size') or callable(getattr(net, 'check_image_size', None)):
        multiple = 1
    return int(multiple), align


def padded_call(fn, img, multiple):
    """``fn`` on ``img`` padded to a multiple of ``multiple`` (:func:`gtplus_arch.nafnet_arch.pad_to_multiple`:
    reflect, bottom and right), its output cropped back to the scale times ``img``'s size.

    Args:
        fn (callable): Tensor[B,C,h',w'] -> Tensor[B,C',s*h',s*w'] for h', w' multiples of ``multiple``.
        img (Tensor): [B,C,h,w], any size.
        multiple (int): see :func:`size_rule`.

    Returns:
        Tensor: [B,C',s*h,s*w].
    """
    height, width = img.shape[-2:]
    padded, _ = pad_to_multiple(img, multiple)
    if padded.shape == img.shape:
        return fn(img)
    out = fn(padded)
    scale = out.shape[-1] // padded.shape[-1]
    return out[:, :, :scale * height, :scale * width]


def tiled_forward(fn, img, tile=512, tile_pad=32, align=None, multiple=None):
    """Apply an image-to-image function (same size, or upscaling by an integer factor) tile by tile and blend the
    tiles back together.

    Each tile is run with ``tile_pad`` pixels of context on every side (cropped away afterwards), so results match
    the untiled call except where a receptive field exceeds the pad. Overlaps are averaged.

    Args:
        fn (callable): Tensor[B,C,h,w] -> Tensor[B,C',s*h,s*w], with one integer scale s (1: same size; an SR
            restorer: its scale, read from the first tile's output).
        img (Tensor): [B,C,H,W].
        tile (int): tile size in pixels (0 or >= the image size: one call on the whole image).
        tile_pad (int): context added around each tile.
        align (int | None): tile origins are rounded down to multiples of this (a U-Net's 2^levels, a window), so
            that strided convolutions and windows see the same grid as on the whole image. None: from
            :func:`size_rule` when ``fn`` is a network, else 1.
        multiple (int | None): every call (each tile, or the whole image) is padded to a multiple of this and
            cropped back (:func:`padded_call`). None: from :func:`size_rule` when ``fn`` is a network, else 1.

    Returns:
        Tensor: [B,C',s*H,s*W].

    Raises:
        ValueError: negative tile or tile_pad; a function whose output is not an integer multiple of its input.
    """
    check_tiling(tile, tile_pad)
    rule = size_rule(fn) if isinstance(fn, nn.Module) else (1, 1)
    multiple = rule[0] if multiple is None else multiple
    align = rule[1] if align is None else align
    _, _, height, width = img.shape
    if not tile or (height <= tile and width <= tile):
        return padded_call(fn, img, multiple)
    out, scale, weight = None, None, None
    for top in tile_starts(height, tile, tile):
        for left in tile_starts(width, tile, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(top - tile_pad, 0) // align * align, max(left - tile_pad, 0) // align * align
            y1, x1 = min(bottom + tile_pad, height), min(right + tile_pad, width)
            result = padded_call(fn, img[:, :, y0:y1, x0:x1], multiple)
            if out is None:
                # Output coordinates are input coordinates times the scale (placing an x2 output at input
                # coordinates once wrote a scrambled mosaic at the input size).
                scale = result.shape[-1] // (x1 - x0)
                if scale < 1 or result.shape[-1] != scale * (x1 - x0) or result.shape[-2] != scale * (y1 - y0):
                    raise ValueError(f'tiling needs an output of an integer multiple of the input size; a '
                                     f'{y1 - y0}x{x1 - x0} tile gave {result.shape[-2]}x{result.shape[-1]}')
                out = img.new_zeros(img.shape[0], result.shape[1], height * scale, width * scale)
                weight = img.new_zeros(1, 1, height * scale, width * scale)
            s = scale
            out[:, :, s * top:s * bottom, s * left:s * right] += \
                result[:, :, s * (top - y0):s * (bottom - y0), s * (left - x0):s * (right - x0)]
            weight[:, :, s * top:s * bottom, s * left:s * right] += 1
    return out / weight


@torch.no_grad()
def run_chain(networks, img, cond=None, tile=0, tile_pad=32):
    """Run networks one after another on ``img``, each tiled and padded to the sizes it accepts (:func:`size_rule`);
    ORNet-like networks get ``cond``.

    Args:
        networks (list[tuple[nn.Module, bool]]): (network, takes_cond) pairs, in order.
        img (Tensor): [B,3,H,W] in [0,1].
        cond (float | None): c for the networks that take it.
        tile (int), tile_pad (int): see :func:`tiled_forward`.

    Returns:
        Tensor: [B,3,H,W] clamped to [0,1].
    """
    out = img
    for net, takes_cond in networks:
        multiple, align = size_rule(net)
        if takes_cond:
            out = tiled_forward(lambda x, n=net: n(x, torch.full((x.shape[0], ), float(cond), device=x.device)), out,
                                tile, tile_pad, align, multiple)
        else:
            out = tiled_forward(net, out, tile, tile_pad, align, multiple)
        out = out.clamp(0, 1)
    return out
