"""``gtplus enhance-gt``: the enhanced GT Î(c) of a dataset, from a trained CFMG, as an LMDB."""
import torch

from gtplus_models.enhanced_supervision import enhance


def read_sources(gt_source, variant_sources, key, device):
    """(gt [1,3,H,W], sources [1,N+1,3,H,W]) for ``key``; variants must match the GT size."""
    from gtplus_models.refine import image_to_tensor
    gt = image_to_tensor(gt_source.read(key), device)
    variants = [image_to_tensor(v.read(key), device) for v in variant_sources]
    for source, variant in zip(variant_sources, variants):
        if variant.shape != gt.shape:
            raise ValueError(f'{key}: variant {source.path} is {tuple(variant.shape[-2:])}, GT is '
                             f'{tuple(gt.shape[-2:])}')
    return gt, torch.stack([gt] + variants, dim=1)


def write_enhanced_gt(cfmg, gt_path, variant_paths, out_path, cond, overwrite=False, device='cpu'):
    """Write clamp(Î(c)) for every key of ``gt_path`` to ``out_path`` (resumable, one LMDB writer).

    Args:
        cfmg (nn.Module): a frozen CFMG in eval mode.
        gt_path (str): GT LMDB or folder; variant_paths (list[str]): its SR variants (same keys, GT size).
        cond (float): c in [0,1].
    """
    from gtplus_data.image_source import ImageSource
    from gtplus_data.lmdb_writer import write_keys
    gt_source = ImageSource(gt_path)
    variant_sources = [ImageSource(p) for p in variant_paths]
    for source in variant_sources:
        missing = sorted(set(gt_source.keys) - set(source.keys))
        if missing:
            raise ValueError(f'{source.path} lacks {len(missing)} GT keys: {", ".join(missing[:10])}')

    @torch.no_grad()
    def load(key):
        gt, sources = read_sources(gt_source, variant_sources, key, device)
        return enhance(cfmg, gt, sources, cond)[0].clamp(0, 1)[0].cpu().numpy().transpose(1, 2, 0)

    write_keys(out_path, gt_source.keys, load, overwrite=overwrite, desc=f'enhance c={cond:g}')
    return out_path
