"""``gtplus super-resolve-gt``: GT-size super-resolution variants of a GT dataset.

For each scale s: bicubic-upsample the GT by s, run the enhancer, optionally align its colours to the upsampled
input (AdaIN or wavelet), and resize back to the GT size (area). N scales give the N variants that the CFMG mixes
with the GT. Each scale is written as its own LMDB (``OUT_DIR/sr_x<s>.lmdb``, same keys as the GT) through the one
LMDB writer, so it is resumable, sharded by rank and atomic.

Enhancers:
- a BasicSR-registered arch with local weights (``--enhancer-opt`` YAML + ``--enhancer-weights``); it receives the
  upsampled image [1,3,sH,sW] in [0,1] and may return any size (resized back to the GT size);
- a diffusers pipeline loaded from a local folder (``--diffusers-pipeline DIR``, ``local_files_only``), called as
  ``pipe(image=PIL, **kwargs).images[0]``: the route for OSEDiff-class one-step diffusion SR exported to diffusers.
"""
import os.path as osp
import zlib

import numpy as np
import torch
from torch.nn import functional as F

from gtplus_arch.colour_align import align_colour
from gtplus_data.image_source import ImageSource
from gtplus_data.image_util import image_to_tensor, tensor_to_image, tensor_to_uint8
from gtplus_data.lmdb_shards import merge_shards, write_sharded
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.checkpoints import load_frozen_network
from gtplus_models.tools.figures import write_sources_preview
from gtplus_models.tools.tiling import tiled_forward


def arch_enhancer(network, tile=0, tile_pad=32):
    """Enhancer from a frozen network: Tensor[1,3,H,W] [0,1] -> Tensor[1,3,H',W']."""

    @torch.no_grad()
    def enhance(img):
        return tiled_forward(network, img, tile, tile_pad).clamp(0, 1)

    return enhance


def diffusers_enhancer(pipeline_dir, device, call_kwargs=None):
    """Enhancer from a diffusers pipeline saved in a local folder (never downloads).

    Args:
        pipeline_dir (str): a folder written by ``pipe.save_pretrained``.
        device (torch.device): where the pipeline runs.
        call_kwargs (dict | None): extra keyword arguments of every ``pipe(image=..., **call_kwargs)`` call, e.g.
            ``{'num_inference_steps': 1, 'prompt': ''}``.

    Returns:
        callable: Tensor[1,3,H,W] in [0,1] -> Tensor[1,3,H',W'] in [0,1] (the pipeline's output size).
    """
    if not osp.isdir(pipeline_dir):
        raise FileNotFoundError(f'--diffusers-pipeline: {pipeline_dir} is not a folder. Save the pipeline there with '
                                'pipe.save_pretrained(DIR) on a machine with the weights.')
    from diffusers import DiffusionPipeline
    from PIL import Image
    try:
        pipe = DiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True).to(device)
    except (OSError, ValueError) as err:  # diffusers reports a missing model_index.json / weight file as OSError
        raise FileNotFoundError(f'--diffusers-pipeline: {pipeline_dir} does not hold a complete diffusers pipeline '
                                f'(model_index.json and each component\'s weights, as written by '
                                f'pipe.save_pretrained(DIR)): {err}') from err
    pipe.set_progress_bar_config(disable=True)
    call_kwargs = dict(call_kwargs or {})

    @torch.no_grad()
    def enhance(img):
        out = pipe(image=Image.fromarray(tensor_to_uint8(img)), **call_kwargs).images[0]
        out = np.asarray(out, dtype=np.float32) / 255. if not isinstance(out, np.ndarray) else out
        return image_to_tensor(out, img.device)

    return enhance


def super_resolve_variant(gt, scale, enhancer, colour_align=None):
    """One GT-size SR variant.

    Args:
        gt (Tensor): [1,3,H,W] RGB in [0,1].
        scale (int): bicubic upsampling factor before the enhancer.
        enhancer (callable): Tensor[1,3,sH,sW] -> Tensor[1,3,*,*] in [0,1].
        colour_align (str | None): None, 'adain' or 'wavelet' (against the upsampled input).

    Returns:
        Tensor: [1,3,H,W] in [0,1].
    """
    height, width = gt.shape[-2:]
    upsampled = F.interpolate(gt, scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1)
    enhanced = enhancer(upsampled)
    if enhanced.shape[-2:] != upsampled.shape[-2:]:
        enhanced = F.interpolate(enhanced, size=upsampled.shape[-2:], mode='bicubic', align_corners=False)
    enhanced = align_colour(enhanced, upsampled, colour_align)
    return F.interpolate(enhanced, size=(height, width), mode='area').clamp(0, 1)


def variant_path(out_dir, scale):
    return osp.join(out_dir, f'sr_x{scale}.lmdb')


def write_variants(gt_path, out_dir, scales, enhancer, colour_align=None, overwrite=False, device='cpu', rank=None,
                   world_size=None, seed=0):
    """Write ``OUT_DIR/sr_x<s>.lmdb`` for each scale (resumable and shardable, through the one LMDB writer).

    With world_size > 1 (flags or torchrun's RANK/WORLD_SIZE) each rank writes its shard of every scale; run
    :func:`merge_variants` (``--merge``) once all ranks are done.

    Args:
        gt_path (str): GT LMDB or folder.
        out_dir (str): where the variant LMDBs go.
        scales (list[int]): e.g. [2, 3, 4].
        enhancer (callable): see :func:`super_resolve_variant`.
        seed (int): base of the per-image seeds of stochastic enhancers.

    Returns:
        list[str]: the LMDB paths this rank completed, in scale order.
    """
    source = ImageSource(gt_path)
    paths = []
    for scale in scales:

        def load(key, scale=scale):
            gt = image_to_tensor(source.read(key), device)
            # A stochastic enhancer (a diffusion pipeline) draws from torch's global generator: seeding it per key
            # and scale makes the output independent of sharding, resuming and processing order.
            torch.manual_seed(seed + zlib.crc32(f'{key}/x{scale}'.encode()))
            return tensor_to_image(super_resolve_variant(gt, scale, enhancer, colour_align))

        paths.append(write_sharded(variant_path(out_dir, scale), source.keys, load, rank, world_size, overwrite,
                                   desc=f'x{scale}'))
    return paths


def merge_variants(out_dir, scales, overwrite=False):
    """Merge the shards of every ``sr_x<s>.lmdb`` written by several ranks."""
    return [merge_shards(variant_path(out_dir, scale), overwrite=overwrite) for scale in scales]


def write_variants_preview(gt_path, out_dir, scales, num_keys=4):
    """``OUT_DIR/preview.png``: for the first ``num_keys`` images, GT | x2 | x3 | ... whole and centre-zoomed.

    Returns:
        str: the figure's path.
    """
    sources = [('GT', ImageSource(gt_path))] + [(f'x{s}', ImageSource(variant_path(out_dir, s))) for s in scales]
    return write_sources_preview(sources, osp.join(out_dir, 'preview.png'), num_keys)


def build_enhancer(enhancer_opt=None, enhancer_weights=None, diffusers_pipeline=None, pipeline_kwargs=None, tile=0,
                   device='cpu'):
    """The enhancer from local files: a BasicSR arch (YAML + weights) or a diffusers pipeline folder, exactly one.

    Args:
        enhancer_opt (str | None): YAML with a BasicSR network mapping (or a ``network_g`` entry).
        enhancer_weights (str | None): its checkpoint.
        diffusers_pipeline (str | None): a folder written by ``pipe.save_pretrained``.
        pipeline_kwargs (dict | None): extra call arguments of the pipeline.
        tile (int): tile size for the arch enhancer (0: whole image).
        device (str | torch.device): where it runs.

    Returns:
        callable: Tensor[1,3,H,W] in [0,1] -> Tensor[1,3,H',W'] in [0,1].
    """
    if bool(enhancer_opt) == bool(diffusers_pipeline):
        raise ValueError('give exactly one enhancer: --enhancer-opt + --enhancer-weights, or --diffusers-pipeline')
    device = torch.device(device)
    if diffusers_pipeline:
        return diffusers_enhancer(diffusers_pipeline, device, pipeline_kwargs)
    network = load_frozen_network(enhancer_opt, enhancer_weights, device, '--enhancer-opt', '--enhancer-weights')
    return arch_enhancer(network, tile=tile)


def super_resolve_gt(gt_path, out_dir, scales, enhancer=None, colour_align=None, overwrite=False, device='cpu',
                     rank=None, world_size=None, seed=0, merge=False, preview=4):
    """``gtplus super-resolve-gt``: write (or, with ``merge``, join the shards of) every ``sr_x<s>.lmdb``, then the
    preview figure once every variant is complete.

    Args:
        gt_path (str): GT LMDB or folder.
        out_dir (str): where ``sr_x<s>.lmdb`` and ``preview.png`` go.
        scales (list[int]): upsampling factors, each >= 1.
        enhancer (callable | None): see :func:`build_enhancer`; not needed with ``merge``.
        colour_align, overwrite, device, rank, world_size, seed: see :func:`write_variants`.
        merge (bool): merge the shards written by all ranks instead of writing.
        preview (int): images in ``OUT_DIR/preview.png`` (0: none).

    Returns:
        list[str]: the variant LMDBs (complete, or this rank's shards) and the preview, if written.
    """
    if not scales or min(scales) < 1:
        raise ValueError(f'scales must be positive integers, got {scales!r}')
    if merge:
        merge_variants(out_dir, scales, overwrite)
        written = [variant_path(out_dir, s) for s in scales]
    else:
        written = write_variants(gt_path, out_dir, scales, enhancer, colour_align, overwrite, device, rank,
                                 world_size, seed)
    if all(is_complete(variant_path(out_dir, s)) for s in scales) and preview > 0:
        # Sharded ranks get here only after --merge: the figure needs every image.
        written.append(write_variants_preview(gt_path, out_dir, scales, preview))
    return written
