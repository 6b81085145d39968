"""Up-front checks of the data an option file points at, before basicsr builds anything.

basicsr finds these problems late: LQ and GT roots with different keys fail while the dataset is built (a bare
``Keys in lq_folder and gt_folder are different``), and a ``gt_size`` larger than an image or a GT that is not
``scale`` times its LQ fail only when that sample is drawn, as a traceback from a loader worker, possibly hours in.
Here they fail first, as a ValueError naming the key and the files (which the option checks raise as
:class:`gtplus_models.options.OptionsError`).

Image sizes come from an LMDB's ``meta_info.txt`` (``key.png (h,w,c) level``: no image is read) or from the header
of each file in a folder (Pillow opens lazily, so only the header is read: about a millisecond per file).
"""
import os.path as osp
import re

SHAPE_PATTERN = re.compile(r'\((\d+),\s*(\d+)(?:,\s*\d+)?\)')


def root_sizes(root, key_of=None):
    """``{key: (height, width)}`` of the images of an LMDB or folder root.

    Args:
        root (str): a BasicSR LMDB folder (complete, with meta_info.txt) or an image folder.
        key_of (callable | None): maps a folder file's stem to its key (default: the stem itself).

    Raises:
        ValueError: a meta_info.txt line without a shape, or an image whose header cannot be read (named).
    """
    from gtplus_data.image_source import is_lmdb_dir, list_image_files
    sizes = {}
    if is_lmdb_dir(root):
        with open(osp.join(root, 'meta_info.txt')) as f:
            for number, line in enumerate(f.read().splitlines(), 1):
                if not line.strip():
                    continue
                match = SHAPE_PATTERN.search(line)
                if match is None:
                    raise ValueError(f'{root}/meta_info.txt line {number} has no (h,w,c) shape: {line!r}')
                sizes[line.split(' ')[0].split('.')[0]] = (int(match.group(1)), int(match.group(2)))
        return sizes
    from PIL import Image
    for stem, path in list_image_files(root).items():
        try:
            with Image.open(path) as img:
                width, height = img.size
        except Exception as err:  # Pillow raises several types (UnidentifiedImageError, OSError, SyntaxError)
            raise ValueError(f'cannot read the image header of {path}: {err}') from None
        sizes[(key_of or str)(stem)] = (height, width)
    return sizes


def check_lmdb_root(prefix, key, root):
    """An LMDB root must be whole (a truncated ``data.mdb`` would kill the loader with SIGBUS) and hold every key
    its ``meta_info.txt`` lists (basicsr reads the keys from there, so a missing one fails mid-training)."""
    import lmdb

    from gtplus_data.image_source import close_lmdb_readonly, is_lmdb_open, open_lmdb_readonly, read_meta_info_keys
    from gtplus_data.lmdb_check import check_lmdb_file
    check_lmdb_file(root)
    if not osp.isfile(osp.join(root, 'meta_info.txt')):
        raise ValueError(f'{prefix}.{key} ({root}) has no meta_info.txt: an unfinished LMDB (rerun the tool that '
                         'wrote it)')
    was_open = is_lmdb_open(root)
    try:
        with open_lmdb_readonly(root).begin() as txn:  # the shared environment: py-lmdb opens a path once
            cursor = txn.cursor()  # set_key positions on a key without copying its (possibly large) value
            missing = [k for k in read_meta_info_keys(root) if not cursor.set_key(k.encode())]
    except lmdb.Error as err:
        raise ValueError(f'{prefix}.{key} ({root}) cannot be read: {err}') from None
    finally:
        if not was_open:  # basicsr's own datasets (FileClient) open the path themselves, and py-lmdb allows one
            close_lmdb_readonly(root)
    if missing:
        more = f' (+{len(missing) - 5} more)' if len(missing) > 5 else ''
        raise ValueError(f'{prefix}.{key} ({root}): meta_info.txt lists {len(missing)} key(s) the data does not hold: '
                         f'{", ".join(missing[:5])}{more}')


def _smallest(sizes):
    key = min(sizes, key=lambda k: min(sizes[k]))
    return key, sizes[key]


def _lq_key_of(dataset):
    """How basicsr's PairedImageDataset maps a GT stem to an LQ stem on disk (``filename_tmpl``); other datasets
    (and LMDB roots) use the same key for both."""
    template = dataset.get('filename_tmpl', '{}')
    if dataset.get('type') == 'PairedImageDataset' and (dataset.get('io_backend') or {}).get('type') != 'lmdb':
        return template.format
    return str


def check_meta_info_file(prefix, dataset):
    """Every name a disk dataset's ``meta_info_file`` lists must exist in ``dataroot_gt`` (and its LQ name, through
    ``filename_tmpl``, in ``dataroot_lq``)."""
    meta = dataset.get('meta_info_file')
    if not meta or (dataset.get('io_backend') or {}).get('type', 'disk') != 'disk':
        return
    with open(osp.expanduser(meta)) as f:
        names = [line.strip().split(' ')[0] for line in f if line.strip()]
    for name in names:
        gt = osp.join(dataset['dataroot_gt'], name)
        if not osp.isfile(gt):
            raise ValueError(f'{prefix}.meta_info_file ({meta}) lists {name}, which is not in '
                                    f'{prefix}.dataroot_gt ({dataset["dataroot_gt"]}).')
        if dataset.get('dataroot_lq'):
            stem, ext = osp.splitext(name)
            lq_name = _lq_key_of(dataset)(stem) + ext
            if not osp.isfile(osp.join(dataset['dataroot_lq'], lq_name)):
                raise ValueError(f'{prefix}.meta_info_file ({meta}) lists {name}, whose LQ {lq_name} is not '
                                        f'in {prefix}.dataroot_lq ({dataset["dataroot_lq"]}).')


def check_pair(prefix, dataset, scale, phase):
    """Keys, ``gt_size`` and the GT / LQ size ratio of one dataset's roots."""
    from gtplus_data.image_source import describe_key_mismatch
    gt_root, lq_root = dataset.get('dataroot_gt'), dataset.get('dataroot_lq')
    if not isinstance(gt_root, str) or not osp.isdir(osp.expanduser(gt_root)):
        return
    gt_sizes = root_sizes(osp.expanduser(gt_root))
    lq_sizes = None
    if isinstance(lq_root, str) and osp.isdir(osp.expanduser(lq_root)):
        lq_sizes = root_sizes(osp.expanduser(lq_root))
        gt_keys = {_lq_key_of(dataset)(key): key for key in gt_sizes}
        mismatch = describe_key_mismatch(gt_keys, lq_sizes, f'{prefix}.dataroot_gt ({gt_root})',
                                         f'{prefix}.dataroot_lq ({lq_root})')
        if mismatch:
            raise ValueError(f'{prefix}: the LQ and GT roots hold different images: {mismatch}.')
        for lq_key, gt_key in gt_keys.items():
            (gh, gw), (lh, lw) = gt_sizes[gt_key], lq_sizes[lq_key]
            # Training crops need GT = scale x LQ exactly (basicsr's paired_random_crop); validation trims the GT
            # to scale x LQ, so it only needs the GT to be at least that and less than one LQ pixel more.
            exact = (gh, gw) == (lh * scale, lw * scale)
            trimmed = lh * scale <= gh < (lh + 1) * scale and lw * scale <= gw < (lw + 1) * scale
            if not (exact if phase == 'train' else trimmed):
                ratio = f'{gh / lh:g}' if lh else 'undefined'
                raise ValueError(
                    f'{prefix}: GT {gt_key} is {gh}x{gw} but its LQ is {lh}x{lw}: a ratio of {ratio}, and scale is '
                    f'{scale} (the top-level scale key; GT must be scale x LQ).')
    gt_size = dataset.get('gt_size')
    if phase == 'train' and isinstance(gt_size, int) and gt_sizes:
        key, (height, width) = _smallest(gt_sizes)
        if min(height, width) < gt_size:
            raise ValueError(f'{prefix}.gt_size is {gt_size} but GT {key} in {gt_root} is {height}x{width}: '
                                    'lower gt_size or remove the small images.')


def check_datasets(opt, walk_datasets):
    """Check each dataset of ``opt`` (nested dataset lists included) against its files; ValueError naming the key
    and the file on the first problem.

    Args:
        opt (dict): parsed options (``datasets``, ``scale``), after :func:`gtplus_models.options.check_paths`.
        walk_datasets (callable): ``(prefix, dataset) -> iterable of (key, mapping)``, the dataset and its nested
            ones (:func:`gtplus_models.options.walk_datasets`).
    """
    from gtplus_data.image_source import is_lmdb_dir
    scale = opt.get('scale', 1)
    for phase, dataset in opt['datasets'].items():
        for prefix, entry in walk_datasets(f'datasets.{phase}', dataset):
            if (entry.get('io_backend') or {}).get('type', 'disk') not in ('disk', 'lmdb'):
                continue
            for key, roots in entry.items():
                for root in (roots if isinstance(roots, list) else [roots]) if key.startswith('dataroot') else []:
                    if isinstance(root, str) and is_lmdb_dir(osp.expanduser(root)):
                        check_lmdb_root(prefix, key, osp.expanduser(root))
            check_meta_info_file(prefix, entry)
            check_pair(prefix, entry, entry.get('scale', scale), phase.split('_')[0])


def network_scale(network_opt):
    """The upscaling factor a network option mapping asks for (``upscale`` or ``scale``, else the arch's default),
    or None when the arch has no such argument."""
    import inspect

    from basicsr.utils.registry import ARCH_REGISTRY
    for name in ('upscale', 'scale'):
        if name in network_opt:
            return network_opt[name]
    try:
        parameters = inspect.signature(ARCH_REGISTRY.get(network_opt['type'])).parameters
    except (KeyError, TypeError, ValueError):
        return None
    for name in ('upscale', 'scale'):
        if name in parameters and parameters[name].default is not inspect.Parameter.empty:
            return parameters[name].default
    return None

