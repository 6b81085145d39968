"""GTPlusScoredImageDataset: images with a per-image quality score from the LMDB's side file."""
import torch
from basicsr.utils.registry import DATASET_REGISTRY

from gtplus_data.dataset_util import KeyedRootsDataset
from gtplus_data.image_util import chw_tensor
from gtplus_data.side_file import read_side_file


@DATASET_REGISTRY.register()
class GTPlusScoredImageDataset(KeyedRootsDataset):
    """Images and their quality scores (IQPIR training), the scores read from a side file of ``dataroot_gt``.

    Args:
        opt (dict): ``dataroot_gt`` (LMDB or folder holding ``<score_file>.json``, see
            :func:`gtplus_data.side_file.write_side_file`), ``score_file`` (default 'quality_scores'),
            ``score_name`` (the record field, default 'ensemble': the IQPIR score that ``gtplus score --ensemble``
            writes), ``io_backend``, ``phase``, ``gt_size``, ``use_hflip``, ``use_rot``.

    Returns (per item):
        dict: ``gt`` Tensor[3, H, W] RGB [0,1]; ``score`` Tensor[] float32; ``gt_path``.
    """

    def __init__(self, opt):
        super().__init__(opt, {'gt': opt['dataroot_gt']})
        score_file, score_name = opt.get('score_file', 'quality_scores'), opt.get('score_name', 'ensemble')
        records = read_side_file(opt['dataroot_gt'], score_file)
        missing = [key for key in self.keys if score_name not in records.get(key, {})]
        if missing:
            more = f' (+{len(missing) - 10} more)' if len(missing) > 10 else ''
            raise ValueError(f'{len(missing)} image(s) of {opt["dataroot_gt"]} have no {score_name!r} in side file '
                             f'{score_file!r}: {", ".join(missing[:10])}{more}')
        self.scores = {key: float(records[key][score_name]) for key in self.keys}

    def __getitem__(self, index):
        key = self.keys[index]
        path = self.path_of('gt', key)
        (gt, ), _ = self.load(key, ['gt'], path=path)
        return {'gt': chw_tensor(gt), 'score': torch.tensor(self.scores[key], dtype=torch.float32), 'gt_path': path}
