"""GTPlusSingleHRDataset: single HR images (LMDB or folder), cropped and augmented for training."""
from basicsr.utils.registry import DATASET_REGISTRY

from gtplus_data.dataset_util import KeyedRootsDataset
from gtplus_data.image_util import chw_tensor


@DATASET_REGISTRY.register()
class GTPlusSingleHRDataset(KeyedRootsDataset):
    """High-resolution images only, e.g. for training a VQ-VAE or a degradation synthesizer.

    Args:
        opt (dict): ``dataroot_gt`` (LMDB or folder), ``io_backend`` ({type: lmdb | disk}), ``phase``, and in the
            train phase ``gt_size`` (random crop), ``use_hflip``, ``use_rot``.

    Returns (per item):
        dict: ``gt`` Tensor[3, H, W] RGB [0,1]; ``gt_path`` (LMDB key or file path).
    """

    def __init__(self, opt):
        super().__init__(opt, {'gt': opt['dataroot_gt']})

    def __getitem__(self, index):
        key = self.keys[index]
        path = self.path_of('gt', key)
        (gt, ), _ = self.load(key, ['gt'], path=path)
        return {'gt': chw_tensor(gt), 'gt_path': path}
