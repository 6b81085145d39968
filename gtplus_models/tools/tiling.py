"""Tiled inference, so that a restorer + ORNet chain runs on images larger than memory allows, and the one rule for
the input sizes a network accepts (:func:`size_rule`): windowed transformers (SwinIR, HAT) need multiples of their
window, and are padded here and cropped back, tiled or not, as basicsr's own SwinIR test does. Networks of one fixed
input size (:func:`fixed_input_size`: IQPIRNet, whose token grid is fixed) get exactly that size in every call
(:func:`fixed_size_forward`).
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
    # Looked for among the modules, so that a wrapper (ScoreConditionedRestorer) gets its RRDBNet's rule too.
    rrdb = next((m for m in net.modules() if type(m).__name__ == 'RRDBNet'), None)
    if multiple == 1 and rrdb is not None and getattr(rrdb, 'scale', None) in (1, 2):
        multiple = 4 // rrdb.scale
    padder = getattr(net, 'padder_size', 1)
    align = math.lcm(int(multiple), int(padder))
    if hasattr(net, 'padder_size') or callable(getattr(net, 'check_image_size', None)):
        multiple = 1
    return int(multiple), align


def fixed_input_size(net):
    """The one input size (square) ``net`` accepts, or None when it takes any size (then :func:`size_rule` holds).

    It is the network's own ``fixed_input_size`` attribute if it declares one; else its ``img_size`` when it also has
    a token grid ``latent_hw`` (IQPIRNet: one position and score embedding per token of an ``img_size`` square).
    ``img_size`` alone does not count: SwinIR and the IQPIR autoencoder keep one but take other sizes.

    Args:
        net (nn.Module): the network.

    Returns:
        int | None: the side in pixels.
    """
    size = getattr(net, 'fixed_input_size', None)
    if not size and getattr(net, 'latent_hw', None) and isinstance(getattr(net, 'img_size', None), int):
        size = net.img_size
    return int(size) if size else None


def check_network_tiling(net, tile, tile_pad):
    """Refuse ``--tile``/``--tile-pad`` values that ``net`` cannot run with, before any output exists: negative
    ones (:func:`check_tiling`), and for a fixed-size network (:func:`fixed_input_size`) a tile other than 0 or its
    size, or a pad that leaves its windows no centre (the windows step by size - 2 * pad).

    Raises:
        ValueError: e.g. "--tile 32 does not fit IQPIRNet, which takes exactly 16x16 inputs: give --tile 16 (or 0)".
    """
    check_tiling(tile, tile_pad)
    size = fixed_input_size(net)
    if size and tile not in (0, size):
        raise ValueError(f'--tile {tile} does not fit {type(net).__name__}, which takes exactly {size}x{size} '
                         f'inputs: give --tile {size} (or 0)')
    if size and 2 * tile_pad >= size:
        raise ValueError(f'--tile-pad {tile_pad} leaves no centre in the {size}x{size} windows of '
                         f'{type(net).__name__}: give --tile-pad {(size - 1) // 2} or less')


def output_image(output):
    """A network's image: ``output`` itself, or the first element of a tuple or list (IQPIRNet returns the image
    and its code logits)."""
    return output[0] if isinstance(output, (tuple, list)) else output


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

    def spans(length):
        """(window start, window end, kept start, kept end) of each tile along one axis."""
        ends = [(start, min(start + tile, length)) for start in tile_starts(length, tile, tile)]
        return [(max(start - tile_pad, 0) // align * align, min(end + tile_pad, length), start, end)
                for start, end in ends]

    return blend_windows(fn, img, spans(height), spans(width), multiple)


def fixed_size_forward(fn, img, size, tile_pad=0):
    """Apply a network of one input size to an image of any size: every call of ``fn`` gets exactly size x size.

    A side shorter than ``size`` is padded (reflect, bottom and right; :func:`padded_call`) and cropped back. A
    longer side is covered by windows of ``size`` that step by ``size - 2 * tile_pad`` and stay inside the image
    (the last one flush with the end); each keeps its output without the ``tile_pad`` context on its inner sides,
    and overlaps are averaged. An image of exactly size x size is one call.

    Args:
        fn (callable): Tensor[B,C,size,size] -> Tensor[B,C',s*size,s*size].
        img (Tensor): [B,C,H,W], any size.
        size (int): the network's input side (:func:`fixed_input_size`).
        tile_pad (int): context pixels on the inner sides of each window, less than size / 2.

    Returns:
        Tensor: [B,C',s*H,s*W].
    """
    check_tiling(size, tile_pad)
    if 2 * tile_pad >= size:
        raise ValueError(f'tile_pad {tile_pad} leaves no centre in {size}x{size} windows')

    def spans(length):
        """(window start, window end, kept start, kept end) of each window along one axis."""
        if length <= size:
            return [(0, length, 0, length)]
        starts = tile_starts(length, size, size - 2 * tile_pad)
        return [(start, start + size, start + tile_pad * (start > 0), start + size - tile_pad * (start + size < length))
                for start in starts]

    return blend_windows(fn, img, spans(img.shape[-2]), spans(img.shape[-1]), size)


def blend_windows(fn, img, rows, cols, multiple):
    """Run ``fn`` on every window ``rows`` x ``cols`` (each padded to ``multiple``, :func:`padded_call`) and average
    the kept parts of the outputs into one image.

    Args:
        fn (callable): Tensor[B,C,h,w] -> Tensor[B,C',s*h,s*w], with one integer scale s.
        img (Tensor): [B,C,H,W].
        rows, cols (list[tuple[int, int, int, int]]): (window start, window end, kept start, kept end) along H and
            W; the kept parts cover the image.
        multiple (int): see :func:`size_rule`.

    Returns:
        Tensor: [B,C',s*H,s*W].
    """
    _, _, height, width = img.shape
    out, scale, weight = None, None, None
    for y0, y1, top, bottom in rows:
        for x0, x1, left, right in cols:
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
    """Run networks one after another on ``img``, each tiled and padded to the sizes it accepts (:func:`size_rule`),
    or, for a network of one input size, in windows of exactly that size (:func:`fixed_size_forward`); ORNet-like
    and score-conditioned networks get ``cond`` (``net(x, cond)``); of a tuple output the first element is the image.

    Args:
        networks (list[tuple[nn.Module, bool]]): (network, takes_cond) pairs, in order.
        img (Tensor): [B,3,H,W] in [0,1].
        cond (float | None): c (or the target score) for the networks that take it.
        tile (int), tile_pad (int): see :func:`tiled_forward`; a fixed-size network takes tile 0 or its size
            (:func:`check_network_tiling`).

    Returns:
        Tensor: [B,3,H,W] clamped to [0,1].
    """
    out = img
    for net, takes_cond in networks:
        def fn(x, net=net, takes_cond=takes_cond):
            conds = (torch.full((x.shape[0], ), float(cond), device=x.device), ) if takes_cond else ()
            return output_image(net(x, *conds))

        size = fixed_input_size(net)
        if size:
            check_network_tiling(net, tile, tile_pad)
            out = fixed_size_forward(fn, out, size, tile_pad)
        else:
            multiple, align = size_rule(net)
            out = tiled_forward(fn, out, tile, tile_pad, align, multiple)
        out = out.clamp(0, 1)
    return out
