"""GTPlusConcatDataset: several ordinary datasets as one, each repeated a whole number of times (joint training)."""
import bisect
import copy

from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data as data


@DATASET_REGISTRY.register()
class GTPlusConcatDataset(data.Dataset):
    """Concatenate datasets built from their own option mappings, with a per-dataset ``repeat`` count.

    BasicSR 1.4.2 has no concatenated dataset type. This one lets a single option file train on, for example,
    SIDD + GoPro with GoPro seen 15 times per pass, as the official enhanced-supervision training does::

        train:
          name: SIDD_GoPro
          type: GTPlusConcatDataset
          datasets:
            - {type: GTPlusPairedVariantsDataset, dataroot_gt: ..., gt_size: 256, ...}
            - {type: GTPlusPairedVariantsDataset, dataroot_gt: ..., gt_size: 256, ..., repeat: 15}
          batch_size_per_gpu: 2
          ...

    Each entry is an ordinary dataset option mapping (its own ``type``, roots, ``io_backend``, ``gt_size``, flips)
    and is built through basicsr's DATASET_REGISTRY. The parent's ``phase`` and ``scale`` (set by the option parser)
    are passed down; the loader keys (``batch_size_per_gpu``, ``num_worker_per_gpu``, ``dataset_enlarge_ratio``,
    ``prefetch_mode``) belong to the parent, as basicsr reads them there. ``repeat`` differs from
    ``dataset_enlarge_ratio``: it weights the entries against each other, while the enlarge ratio lengthens the
    whole epoch.

    Args:
        opt (dict): ``datasets`` (list[dict]): the entries, each with ``type`` and optionally ``repeat`` (int >= 1,
            default 1) and ``name`` (default ``<parent name>[i]``); ``phase``; ``scale`` (optional); ``name``.

    Returns (per item):
        dict: the item of the entry that index falls in, unchanged. Indices run through entry 0 repeated
        ``repeat_0`` times, then entry 1, and so on; ``len = Σ_i len_i · repeat_i``.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        entries = opt.get('datasets')
        if not isinstance(entries, (list, tuple)) or not entries:
            raise ValueError(f'GTPlusConcatDataset needs datasets: a non-empty list of dataset option mappings, got '
                             f'{entries!r}.')
        self.datasets, self.repeats, self.ends = [], [], []
        total = 0
        for index, entry in enumerate(entries):
            where = f'datasets[{index}]'
            child_opt, repeat = self._entry_options(entry, index)
            try:
                dataset = DATASET_REGISTRY.get(child_opt['type'])(child_opt)
            except Exception as err:
                # Keep the original as the cause; say which entry it was, since several may share a type.
                raise ValueError(f'{where} ({child_opt["type"]}) could not be built: {err}') from err
            self.datasets.append(dataset)
            self.repeats.append(repeat)
            total += len(dataset) * repeat
            self.ends.append(total)

    def _entry_options(self, entry, index):
        """Validate entry ``index``; return its options (parent phase/scale passed down, ``repeat`` removed) and
        its repeat count."""
        where = f'datasets[{index}]'
        if not isinstance(entry, dict):
            raise ValueError(f'{where} must be a dataset option mapping, got {entry!r}.')
        if 'type' not in entry:
            raise ValueError(f'{where} has no type.')
        if entry['type'] not in DATASET_REGISTRY:
            raise ValueError(f"{where}.type: '{entry['type']}' is not a registered dataset type.")
        repeat = entry.get('repeat', 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f'{where}.repeat must be an integer >= 1, got {repeat!r}.')
        child_opt = copy.deepcopy({key: value for key, value in entry.items() if key != 'repeat'})
        child_opt.setdefault('name', f'{self.opt.get("name", "concat")}[{index}]')
        if 'phase' in self.opt:
            child_opt['phase'] = self.opt['phase']
        if 'scale' in self.opt:
            child_opt['scale'] = self.opt['scale']
        return child_opt, repeat

    def __len__(self):
        return self.ends[-1]

    def locate(self, index):
        """Global index -> (entry number, index inside that entry's dataset)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} is out of range for GTPlusConcatDataset of length {len(self)}')
        which = bisect.bisect_right(self.ends, index)
        start = self.ends[which - 1] if which else 0
        return which, (index - start) % len(self.datasets[which])

    def __getitem__(self, index):
        which, inner = self.locate(index)
        return self.datasets[which][inner]
