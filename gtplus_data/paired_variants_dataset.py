"""GTPlusPairedVariantsDataset: LQ/GT pairs plus GT-size variants (enhanced supervision), cropped together."""
import torch
from basicsr.utils.registry import DATASET_REGISTRY

from gtplus_data.dataset_util import KeyedRootsDataset
from gtplus_data.image_util import chw_tensor


@DATASET_REGISTRY.register()
class GTPlusPairedVariantsDataset(KeyedRootsDataset):
    """Like basicsr's PairedImageDataset, plus optional GT-size variants (SR variants of the GT) cropped and
    augmented exactly like ``gt``; ``dataroot_lq: ~`` gives GT + variants only (CFMG training).

    Args:
        opt (dict): ``dataroot_gt``; ``dataroot_lq`` (or None); ``dataroot_variants`` (list of roots, optional);
            ``io_backend`` ({type: lmdb | disk}); ``scale``; ``phase``; train phase: ``gt_size``, ``use_hflip``,
            ``use_rot``. Every root must hold the same keys.

    Returns (per item):
        dict: ``gt`` Tensor[3, H, W] RGB [0,1], ``gt_path``, ``lq_path`` (= gt_path without an LQ root); with an
        LQ root ``lq`` Tensor[3, H/scale, W/scale]; with variants ``variants`` Tensor[N, 3, H, W] RGB [0,1] and
        ``variant_paths``.
    """

    def __init__(self, opt):
        roots = {'gt': opt['dataroot_gt']}
        if opt.get('dataroot_lq'):
            roots['lq'] = opt['dataroot_lq']
        self.variant_names = [f'variant{i}' for i in range(len(opt.get('dataroot_variants') or []))]
        roots.update(zip(self.variant_names, opt.get('dataroot_variants') or []))
        super().__init__(opt, roots)
        self.has_lq = 'lq' in roots
        self.scale = int(opt.get('scale', 1))

    def __getitem__(self, index):
        key = self.keys[index]
        gt_path = self.path_of('gt', key)
        gts, lq = self.load(key, ['gt'] + self.variant_names, 'lq' if self.has_lq else None, self.scale, gt_path)
        out = {'gt': chw_tensor(gts[0]), 'gt_path': gt_path}
        if lq is not None:
            out.update(lq=chw_tensor(lq), lq_path=self.path_of('lq', key))
        else:
            out['lq_path'] = gt_path  # basicsr's validation names its results after lq_path
        if self.variant_names:
            out['variants'] = torch.stack([chw_tensor(img) for img in gts[1:]])
            out['variant_paths'] = [self.path_of(name, key) for name in self.variant_names]
        return out
