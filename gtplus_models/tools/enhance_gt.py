"""``gtplus enhance-gt``: the enhanced GT Î(c) of a dataset, from a trained CFMG, as an LMDB, with a preview figure."""
import os.path as osp

import torch

from gtplus_arch import CFMG
from gtplus_data.image_source import ImageSource, input_source
from gtplus_data.image_util import image_to_tensor, tensor_to_image, tensor_to_uint8, to_uint8, write_png
from gtplus_data.lmdb_shards import merge_shards, write_sharded
from gtplus_data.lmdb_writer import is_complete
from gtplus_models.checkpoints import load_frozen_network
from gtplus_models.enhanced_supervision import enhance
from gtplus_data.figures import labelled_strip, mask_to_colour, preview_rows, stack_rows


def read_sources(gt_source, variant_sources, key, device):
    """(gt [1,3,H,W], sources [1,N+1,3,H,W]) for ``key``; variants must match the GT size."""
    gt = image_to_tensor(gt_source.read(key), device)
    variants = [image_to_tensor(v.read(key), device) for v in variant_sources]
    for source, variant in zip(variant_sources, variants):
        if variant.shape != gt.shape:
            raise ValueError(f'{key}: variant {source.path} is {tuple(variant.shape[-2:])}, GT is '
                             f'{tuple(gt.shape[-2:])}')
    return gt, torch.stack([gt] + variants, dim=1)


@torch.no_grad()
def enhanced_sweep(cfmg, gt_source, variant_sources, conds, device='cpu'):
    """Î(c) of every key of ``gt_source`` at each c: what the c knob does to the target.

    Args:
        cfmg (nn.Module): a frozen CFMG in eval mode.
        gt_source (ImageSource): the GT; variant_sources (list[ImageSource]): its variants (same keys, GT size).
        conds (list[float]): c values in [0,1].

    Returns:
        dict[float, dict[str, ndarray]]: c -> key -> HxWx3 float32 RGB in [0,1] (clamped, not quantised).
    """
    images = {c: {} for c in conds}
    for key in gt_source.keys:
        gt, sources = read_sources(gt_source, variant_sources, key, device)
        for c in conds:
            images[c][key] = tensor_to_image(enhance(cfmg, gt, sources, c)[0])
    return images


def write_enhanced_gt(cfmg, gt_path, variant_paths, out_path, cond, overwrite=False, device='cpu', rank=None,
                      world_size=None):
    """Write clamp(Î(c)) for every key of ``gt_path`` to ``out_path`` (resumable, one LMDB writer).

    With world_size > 1 (arguments or torchrun's RANK/WORLD_SIZE) this rank writes its shard; merge the shards with
    :func:`gtplus_data.lmdb_writer.merge_shards` once every rank is done.

    Args:
        cfmg (nn.Module): a frozen CFMG in eval mode.
        gt_path (str): GT LMDB or folder; variant_paths (list[str]): its SR variants (same keys, GT size).
        cond (float): c in [0,1].

    Returns:
        str: the LMDB this rank completed (``out_path`` or its shard).
    """
    expected = getattr(cfmg, 'num_sources', None)
    if expected is not None and len(variant_paths) + 1 != expected:
        # Checked before the writer opens the output: a mismatch found at the first image left a partial LMDB.
        raise ValueError(f'the CFMG mixes the GT and {expected - 1} variants, got {len(variant_paths)} --variants '
                         f'({", ".join(variant_paths) or "none"})')
    gt_source = input_source(gt_path)
    variant_sources = [ImageSource(p) for p in variant_paths]
    for source in variant_sources:
        missing = sorted(set(gt_source.keys) - set(source.keys))
        if missing:
            raise ValueError(f'{source.path} lacks {len(missing)} GT keys: {", ".join(missing[:10])}')

    @torch.no_grad()
    def load(key):
        gt, sources = read_sources(gt_source, variant_sources, key, device)
        return tensor_to_image(enhance(cfmg, gt, sources, cond)[0])

    # The GT's fingerprints are recorded: resuming after the GT changed is refused (the variants follow the GT).
    return write_sharded(out_path, gt_source.keys, load, rank, world_size, overwrite, desc=f'enhance c={cond:g}',
                         fingerprint=gt_source.fingerprint)


def source_names(variant_paths):
    """Figure labels of the CFMG's sources: 'GT', then each variant's file name without '.lmdb'."""
    return ['GT'] + [osp.basename(osp.normpath(p)).replace('.lmdb', '') for p in variant_paths]


@torch.no_grad()
def mask_panels(cfmg, gt, cond, names):
    """The CFMG's frequency mask of each source for one image, as figure panels.

    Args:
        cfmg (nn.Module): a frozen CFMG.
        gt (Tensor): [1,3,H,W] in [0,1].
        cond (float): c in [0,1].
        names (list[str]): one label per source.

    Returns:
        list[tuple[str, ndarray]]: ('mask NAME', HxWx3 uint8 viridis map, centred spectrum: DC in the middle).
    """
    masks = cfmg.predict_masks(gt, torch.full((1, ), float(cond), device=gt.device))[0].cpu().numpy()
    return [(f'mask {name}', mask_to_colour(mask)) for name, mask in zip(names, masks)]


@torch.no_grad()
def write_enhanced_preview(cfmg, gt_path, variant_paths, out_path, cond, num_keys=4, device='cpu'):
    """``OUT.lmdb/preview.png``: for the first ``num_keys`` images, the sources and Î(c) (whole and centre-zoomed)
    and the mask of each source.

    Returns:
        str: the figure's path.
    """
    gt_source, enhanced = ImageSource(gt_path), ImageSource(out_path)
    variant_sources = [ImageSource(p) for p in variant_paths]
    names = source_names(variant_paths)
    rows = []
    for key in gt_source.keys[:num_keys]:
        gt, sources = read_sources(gt_source, variant_sources, key, device)
        panels = [(name, tensor_to_uint8(sources[:, i])) for i, name in enumerate(names)]
        panels.append((f'enhanced c={cond:g}', to_uint8(enhanced.read(key))))
        rows += preview_rows(key, panels)
        rows.append(labelled_strip(mask_panels(cfmg, gt, cond, names), height=192))
    path = osp.join(out_path, 'preview.png')
    write_png(path, stack_rows(rows))
    return path


def enhance_gt(gt_path, variant_paths, out_path, cond, cfmg_opt, cfmg_weights, overwrite=False, device='cpu',
               rank=None, world_size=None, merge=False, preview=4):
    """``gtplus enhance-gt``: write (or, with ``merge``, join the shards of) the enhanced GT LMDB, then its preview
    once it is complete.

    Args:
        gt_path (str): GT LMDB or folder; variant_paths (list[str]): its SR variants (same keys, GT size).
        out_path (str): the output LMDB.
        cond (float): c in [0,1].
        cfmg_opt (str): YAML with the CFMG network mapping (or a ``network_g`` entry); another network is refused.
        cfmg_weights (str): CFMG checkpoint (basicsr ``.pth`` or the official ``CFMG.pkl``).
        overwrite, device, rank, world_size: see :func:`write_enhanced_gt`.
        merge (bool): merge the shards written by all ranks instead of writing.
        preview (int): images in ``OUT/preview.png`` (0: none).

    Returns:
        list[str]: the LMDB (or this rank's shard) and the preview, if written.
    """
    if not 0 <= cond <= 1:
        raise ValueError(f'--cond must be in [0,1], got {cond}')
    device = torch.device(device)
    cfmg = load_frozen_network(cfmg_opt, cfmg_weights, device, '--cfmg-opt', '--cfmg-weights', CFMG)
    if merge:
        merge_shards(out_path, overwrite=overwrite)
        written = [out_path]
    else:
        written = [write_enhanced_gt(cfmg, gt_path, variant_paths, out_path, cond, overwrite, device, rank,
                                     world_size)]
    if is_complete(out_path) and preview > 0:  # sharded ranks: only after the merge
        written.append(write_enhanced_preview(cfmg, gt_path, variant_paths, out_path, cond, preview, device))
    return written
