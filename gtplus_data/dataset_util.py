"""Shared reading logic of the gtplus datasets: several keyed image roots (LMDB or folder), opened lazily in each
dataloader worker, cropped and augmented identically."""
import random
from contextlib import ExitStack

from torch.utils import data as data

from gtplus_data.image_source import ImageSource, describe_key_mismatch, is_lmdb_dir
from gtplus_data.image_util import pixels_to_rgb_float


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

    Training crops (:meth:`load`) of BMP LMDBs (``gtplus make-lmdb --encoding bmp``) are read as windows straight
    from the LMDB map: only the ``gt_size`` crop of each image is copied and converted to float, with the same
    random draws as the full decode + crop, so the samples are bit-identical to those of a PNG LMDB of the same
    images. Any other value (PNG, a folder, a BMP that is not 24-bit uncompressed) takes the full decode.

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

    def load(self, key, gt_names, lq_name=None, scale=1, path=''):
        """Image ``key`` of roots ``gt_names`` (GT size) and ``lq_name`` (optional), ready for a sample: in the train
        phase cropped (``gt_size``) and augmented identically, otherwise whole (GT trimmed to ``scale`` x LQ, as
        basicsr).

        Args:
            key (str): the key.
            gt_names (list[str]): roots of GT-size images (gt first, then variants).
            lq_name (str | None): the root of the LQ image, ``scale`` times smaller.
            scale (int): GT / LQ size ratio.
            path (str): named in errors.

        Returns:
            tuple[list[np.ndarray], np.ndarray | None]: (H, W, 3) float32 RGB [0,1] gts, and the lq (or None).
        """
        windows = self._read_crop_windows(key, gt_names, lq_name, scale)
        if windows is not None:
            gts, lq = windows
            return self._augment(gts, lq)
        gts = [self.read(name, key) for name in gt_names]
        lq = self.read(lq_name, key) if lq_name else None
        if lq is not None and self.opt.get('phase') != 'train':
            # As basicsr: trim GT to scale x LQ, so sizes that are not multiples of scale still pair up.
            gts = [img[:lq.shape[0] * scale, :lq.shape[1] * scale] for img in gts]
        return self.crop_and_augment(gts, lq, scale, path)

    def _read_crop_windows(self, key, gt_names, lq_name, scale):
        """The training crops read as windows of the stored pixels (see the class docstring), or None where that
        path does not apply; then nothing is drawn from ``random``, and the full decode reads (and reports errors).

        The crop position comes from the same ``random`` calls as :func:`random_crop_many` (GT only) and basicsr's
        ``paired_random_crop`` (with LQ: drawn on the LQ grid, GT at ``scale`` times it).
        """
        gt_size = self.opt.get('gt_size')
        if self.cache is not None or self.opt.get('phase') != 'train' or not gt_size:
            return None
        names = list(gt_names) + ([lq_name] if lq_name else [])
        with ExitStack() as stack:
            views = [stack.enter_context(self.sources[name].pixel_view(key)) for name in names]
            if any(view is None for view in views):
                return None
            height, width = views[0].shape[:2]
            if any(view.shape != views[0].shape for view in views[:len(gt_names)]):
                return None
            if lq_name:
                lq_size = gt_size // scale
                lq_height, lq_width = views[-1].shape[:2]
                if (height, width) != (lq_height * scale, lq_width * scale) or min(lq_height, lq_width) < lq_size:
                    return None
                top, left = random.randint(0, lq_height - lq_size), random.randint(0, lq_width - lq_size)
                lq = pixels_to_rgb_float(views[-1][top:top + lq_size, left:left + lq_size], key)
                top, left = top * scale, left * scale
            else:
                if min(height, width) < gt_size:
                    return None
                top, left, lq = random.randint(0, height - gt_size), random.randint(0, width - gt_size), None
            gts = [pixels_to_rgb_float(view[top:top + gt_size, left:left + gt_size], key)
                   for view in views[:len(gt_names)]]
        return gts, lq

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
        from basicsr.data.transforms import paired_random_crop
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
        if self.cache is not None:
            # basicsr's augment flips in place, and crops are views: never let it write into cached images
            gts, lq = [img.copy() for img in gts], (None if lq is None else lq.copy())
        return self._augment(gts, lq)

    def _augment(self, gts, lq):
        """basicsr's ``augment`` (flips in place) of train-phase crops, the same draws for all."""
        from basicsr.data.transforms import augment
        out = augment(gts + ([lq] if lq is not None else []), self.opt.get('use_hflip', False),
                      self.opt.get('use_rot', False))
        out = out if isinstance(out, list) else [out]
        return (out[:-1], out[-1]) if lq is not None else (out, None)
