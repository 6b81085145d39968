"""Tiled inference, so that a restorer + ORNet chain runs on images larger than memory allows."""
import torch


def tile_starts(length, tile, stride):
    """Start offsets covering [0, length) with tiles of ``tile`` pixels, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tiled_forward(fn, img, tile=512, tile_pad=32, align=1):
    """Apply a same-size image-to-image function tile by tile and blend the tiles back together.

    Each tile is run with ``tile_pad`` pixels of context on every side (cropped away afterwards), so results match
    the untiled call except where a receptive field exceeds the pad. Overlaps are averaged.

    Args:
        fn (callable): Tensor[B,C,h,w] -> Tensor[B,C',h,w].
        img (Tensor): [B,C,H,W].
        tile (int): tile size in pixels (0 or >= the image size: one call on the whole image).
        tile_pad (int): context added around each tile.
        align (int): tile origins are rounded down to multiples of this (a U-Net's 2^levels), so that strided
            convolutions see the same sampling grid as on the whole image.

    Returns:
        Tensor: [B,C',H,W].
    """
    _, _, height, width = img.shape
    if not tile or (height <= tile and width <= tile):
        return fn(img)
    out = None
    weight = img.new_zeros(1, 1, height, width)
    for top in tile_starts(height, tile, tile):
        for left in tile_starts(width, tile, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(top - tile_pad, 0) // align * align, max(left - tile_pad, 0) // align * align
            y1, x1 = min(bottom + tile_pad, height), min(right + tile_pad, width)
            result = fn(img[:, :, y0:y1, x0:x1])
            if out is None:
                out = img.new_zeros(img.shape[0], result.shape[1], height, width)
            out[:, :, top:bottom, left:right] += result[:, :, top - y0:bottom - y0, left - x0:right - x0]
            weight[:, :, top:bottom, left:right] += 1
    return out / weight


@torch.no_grad()
def run_chain(networks, img, cond=None, tile=0, tile_pad=32):
    """Run networks one after another on ``img``, each tiled; ORNet-like networks get ``cond``.

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
        align = getattr(net, 'padder_size', 1)
        if takes_cond:
            out = tiled_forward(lambda x, n=net: n(x, torch.full((x.shape[0], ), float(cond), device=x.device)), out,
                                tile, tile_pad, align)
        else:
            out = tiled_forward(net, out, tile, tile_pad, align)
        out = out.clamp(0, 1)
    return out
