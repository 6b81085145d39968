"""``gtplus make-enhancer-pairs``: training pairs for an enhancer, made from a user's own GT set.

For every GT image and scale s, the pair ``<key>_x<s>`` is (LQ, GT) at the GT's size, with LQ the classical SR
degradation of the GT (:func:`gtplus_data.degradations.sr_degrade`): optional Gaussian blur, bicubic down by s,
optional Gaussian noise and JPEG at the low resolution, bicubic back up. An enhancer trained on these pairs (any
BasicSR restorer, e.g. ``GTPlusNAFNet`` with ``PairedImageDataset``, scale 1) learns to undo exactly what
``super-resolve-gt`` feeds it: a bicubic-upsampled, slightly imperfect photo.

Blur σ, noise σ and JPEG quality are drawn per pair, uniformly from the given ranges, from a generator seeded by the
pair's key (:func:`gtplus_data.degradations.key_seed`), so reruns, resumed runs and sharded runs agree byte for byte.

Outputs: ``OUT_PREFIX_lq.lmdb`` and ``OUT_PREFIX_gt.lmdb`` (same keys; the GT repeated once per scale), through the
one LMDB writer (resumable, sharded by rank, merged with ``merge``), and ``OUT_PREFIX_preview.png`` (LQ | GT).
"""
import numpy as np

from gtplus_data.degradations import key_seed, sr_degrade
from gtplus_data.image_source import ImageSource, input_source
from gtplus_data.lmdb_shards import merge_shards, write_sharded
from gtplus_data.lmdb_writer import is_complete
from gtplus_data.figures import write_sources_preview

# (lowest, highest) allowed value of each range, for the checks and their messages.
RANGE_LIMITS = {'blur': (0., None), 'noise': (0., 255.), 'jpeg': (1, 100)}


def check_range(name, value):
    """A ``(low, high)`` range of the degradation ``name`` (blur σ, noise σ on 0-255, JPEG quality), checked.

    Args:
        name (str): 'blur', 'noise' or 'jpeg' (also the flag, ``--name``).
        value (None | float | tuple): None (no such degradation), one number (a fixed value) or (low, high).

    Returns:
        tuple | None: (low, high) with low <= high inside the allowed limits; ints for jpeg.

    Raises:
        ValueError: naming the flag, for a malformed, reversed or out-of-limits range.
    """
    if value is None:
        return None
    values = [value] * 2 if np.isscalar(value) else list(value)
    lowest, highest = RANGE_LIMITS[name]
    try:
        low, high = (int(v) if name == 'jpeg' else float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f'--{name} must be LOW,HIGH (or one value), got {value!r}') from None
    if low > high or low < lowest or (highest is not None and high > highest):
        limits = f'[{lowest}, {highest}]' if highest is not None else f'>= {lowest}'
        raise ValueError(f'--{name} must be LOW,HIGH with LOW <= HIGH, both {limits}, got {value!r}')
    return low, high


def enhancer_pair(img, scale, rng, blur=None, noise=None, jpeg=None):
    """The LQ image of one enhancer training pair (the GT is ``img`` itself).

    Args:
        img (ndarray): HxWx3 float32 RGB in [0,1], the GT.
        scale (int): bicubic down-up factor, >= 1.
        rng (numpy.random.RandomState): draws the degradation parameters, then the noise.
        blur, noise, jpeg (tuple | None): (low, high) ranges of the Gaussian blur σ (GT pixels), the noise σ (0-255
            scale) and the JPEG quality; None leaves that degradation out. Checked by :func:`check_range`.

    Returns:
        ndarray: HxWx3 float32 RGB in [0,1], the size of ``img``. With no ranges it is the plain bicubic down-up.
    """
    blur, noise, jpeg = check_range('blur', blur), check_range('noise', noise), check_range('jpeg', jpeg)
    # Fixed draw order (blur, noise, jpeg), each only when asked for, so a key's parameters depend only on its seed.
    blur_sigma = rng.uniform(*blur) if blur else 0.
    noise_sigma = rng.uniform(*noise) if noise else 0.
    quality = int(rng.randint(jpeg[0], jpeg[1] + 1)) if jpeg else None
    return sr_degrade(img, scale, blur_sigma, noise_sigma, quality, rng)


def pair_key(key, scale):
    """The key of the pair of GT ``key`` at ``scale``: 'img0_x2'."""
    return f'{key}_x{scale}'


def pair_paths(out_prefix):
    """(``OUT_PREFIX_lq.lmdb``, ``OUT_PREFIX_gt.lmdb``), as ``make-lmdb --lq/--gt`` names a pair."""
    return f'{out_prefix}_lq.lmdb', f'{out_prefix}_gt.lmdb'


def write_enhancer_pairs(gt_path, out_prefix, scales, blur=None, noise=None, jpeg=None, seed=0, overwrite=False,
                         rank=None, world_size=None, merge=False, preview=4):
    """Write the LQ and GT LMDBs of enhancer training pairs (or, with ``merge``, join their shards), then a preview.

    Args:
        gt_path (str): GT LMDB or image folder.
        out_prefix (str): writes ``OUT_PREFIX_lq.lmdb``, ``OUT_PREFIX_gt.lmdb`` and ``OUT_PREFIX_preview.png``.
        scales (list[int]): down-up factors, each >= 1 (1: degradations without resolution loss).
        blur, noise, jpeg (tuple | float | None): ranges, see :func:`enhancer_pair`.
        seed (int): base seed; each pair draws from ``key_seed(seed, '<key>_x<s>')``.
        overwrite (bool): replace complete outputs.
        rank, world_size (int | None): this process's shard (default: torchrun's RANK / WORLD_SIZE, else 0 of 1).
        merge (bool): merge the shards written by all ranks instead of writing.
        preview (int): pairs in the preview figure (0: none).

    Returns:
        list[str]: the two LMDBs (or this rank's shards) and the preview, if written.
    """
    if not scales or any(int(s) != s or s < 1 for s in scales):
        raise ValueError(f'--scales must be positive integers, got {scales!r}')
    scales = [int(s) for s in scales]
    ranges = {'blur': check_range('blur', blur), 'noise': check_range('noise', noise),
              'jpeg': check_range('jpeg', jpeg)}
    lq_path, gt_out = pair_paths(out_prefix)
    if merge:
        written = [lq_path, gt_out]
        for path in written:
            merge_shards(path, overwrite=overwrite)
    else:
        source = input_source(gt_path)
        origin = {pair_key(key, s): (key, int(s)) for key in source.keys for s in scales}

        def load_lq(key):
            gt_key, scale = origin[key]
            rng = np.random.RandomState(key_seed(seed, key))
            return enhancer_pair(source.read(gt_key), scale, rng, **ranges)

        def fingerprint(key):  # the GT image a pair is made from: resuming after it changed is refused
            return source.fingerprint(origin[key][0])

        written = [write_sharded(lq_path, list(origin), load_lq, rank, world_size, overwrite, desc='LQ pairs',
                                 fingerprint=fingerprint),
                   write_sharded(gt_out, list(origin), lambda key: source.read(origin[key][0]), rank, world_size,
                                 overwrite, desc='GT pairs', fingerprint=fingerprint)]
    if preview > 0 and is_complete(lq_path) and is_complete(gt_out):
        sources = [('LQ', ImageSource(lq_path)), ('GT', ImageSource(gt_out))]
        written.append(write_sources_preview(sources, f'{out_prefix}_preview.png', preview))
    return written
