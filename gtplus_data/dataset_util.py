"""Shared reading logic of the gtplus datasets: several keyed image roots (LMDB or folder), opened lazily in each
dataloader worker, cropped and augmented identically."""
import random

from torch.utils import data as data

from gtplus_data.image_source import ImageSource, describe_key_mismatch, is_lmdb_dir


def check_backend(roots, io_backend):
    """Refuse roots whose kind contradicts ``io_backend['type']`` ('lmdb' or 'disk'; None accepts either)."""
    wanted = (io_backend or {}).get('type')
    for name, root in roots.items():
        if wanted == 'lmdb' and not is_lmdb_dir(root):
            raise ValueError(f'io_backend is lmdb but {name} root is not an LMDB (no data.mdb): {root}')
        if wanted == 'disk' and is_lmdb_dir(root):
            raise ValueError(f'io_backend is disk but {name} root is an LMDB: {root}')


def random_crop_many(images, size, path):
    """The same random ``size`` x ``size`` crop of several (H, W, C) images of one size (Python's ``random``, as
    basicsr, so that basicsr's seeding makes it reproducible)."""
    height, width = images[0].shape[:2]
    if height < size or width < size:
        raise ValueError(f'image {height}x{width} is smaller than gt_size {size}: {path}')
    top, left = random.randint(0, height - size), random.randint(0, width - size)
    return [img[top:top + size, left:left + size] for img in images]


class KeyedRootsDataset(data.Dataset):
    """Base of the gtplus datasets: named image roots that hold the same keys, read by key.

    Each root is a BasicSR LMDB (complete: with meta_info.txt) or an image folder, read through
    :class:`gtplus_data.image_source.ImageSource`: images are decoded alike everywhere (gray -> RGB, RGBA over white,
    16-bit / 65535), and an LMDB is opened read-only and lock-free on the first read in each process, never in
    ``__init__``. basicsr's FileClient is not used for reading because it opens its own environment per dataset,
    and py-lmdb refuses a second environment for one path in a process (train and val sets, or a variant root given
    twice, would fail); the format is the same, so basicsr's FileClient reads these LMDBs too.

    Args:
        opt (dict): the dataset options (``io_backend``, ``gt_size``, ``use_hflip``, ``use_rot``, ``phase``,
            ``cache_decoded``). ``cache_decoded: true`` keeps every decoded image in each worker's memory after its
            first read: PNG decoding is then paid once per worker, not once per sample, which matters when the
            loader shares a few CPU cores with training (small datasets: the quickstart, patches of a few photos).
        roots (dict[str, str]): name -> root path; the first one defines the keys.
    """

    def __init__(self, opt, roots):
        super().__init__()
        self.opt = opt
        self.cache = {} if opt.get('cache_decoded') else None
        self.roots = dict(roots)
        check_backend(self.roots, opt.get('io_backend'))
        self.sources = {name: ImageSource(root) for name, root in self.roots.items()}
        first, *others = self.sources.items()
        self.keys = first[1].keys
        for name, source in others:
            mismatch = describe_key_mismatch(self.keys, source.keys, f'{first[0]} {first[1].path}',
                                             f'{name} {source.path}')
            if mismatch:
                raise ValueError(f'dataset roots hold different keys: {mismatch}')

    def __len__(self):
        return len(self.keys)

    def path_of(self, name, key):
        """What BasicSR reports as ``*_path``: the key for LMDB roots, the file path for folders."""
        source = self.sources[name]
        return key if source.kind == 'lmdb' else source.describe(key)

    def read(self, name, key):
        """Image ``key`` of root ``name`` as (H, W, 3) float32 RGB in [0, 1] (do not modify it in place)."""
        if self.cache is None:
            return self.sources[name].read(key)
        if (name, key) not in self.cache:
            self.cache[(name, key)] = self.sources[name].read(key)
        return self.cache[(name, key)]

    def crop_and_augment(self, gts, lq=None, scale=1, path=''):
        """Crop (train phase, ``gt_size``) and flip/rotate GT-sized images and an optional LQ identically.

        Args:
            gts (list[np.ndarray]): (H, W, 3) images of GT size (gt first, then variants).
            lq (np.ndarray | None): (H/scale, W/scale, 3) image.
            scale (int): GT / LQ size ratio.
            path (str): named in errors.

        Returns:
            tuple[list[np.ndarray], np.ndarray | None]: the transformed gts and lq.
        """
        from basicsr.data.transforms import augment, paired_random_crop
        for img in gts[1:]:
            if img.shape != gts[0].shape:
                raise ValueError(f'variant size {img.shape[:2]} differs from gt size {gts[0].shape[:2]}: {path}')
        if self.opt.get('phase') != 'train':
            return gts, lq
        gt_size = self.opt.get('gt_size')
        if gt_size and lq is not None:
            gts, lq = paired_random_crop(gts, lq, gt_size, scale, path)
            gts = gts if isinstance(gts, list) else [gts]  # basicsr unwraps one-element lists
        elif gt_size:
            gts = random_crop_many(gts, gt_size, path)
        images = gts + ([lq] if lq is not None else [])
        if self.cache is not None:
            # basicsr's augment flips in place, and crops are views: never let it write into cached images
            images = [img.copy() for img in images]
        out = augment(images, self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        out = out if isinstance(out, list) else [out]
        return (out[:-1], out[-1]) if lq is not None else (out, None)
