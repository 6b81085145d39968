"""Arguments shared by several subcommands (not a subcommand itself: the leading underscore hides it)."""


def add_shard_arguments(parser, merge_help):
    """--rank / --world-size / --merge of the tools that write LMDBs through the one writer.

    Without flags the torchrun environment (RANK, WORLD_SIZE) decides, so ``torchrun --nproc_per_node=N -m``-style
    launches shard on their own; every rank writes its shard, then one ``--merge`` run joins them.
    """
    parser.add_argument('--rank', type=int, help='this process writes shard RANK (default: $RANK, else 0)')
    parser.add_argument('--world-size', type=int, help='number of shards (default: $WORLD_SIZE, else 1)')
    parser.add_argument('--merge', action='store_true', help=merge_help)


def add_cond_argument(parser, help_text, sweep=False):
    """``--cond`` with the one default c (:data:`gtplus_models.enhanced_supervision.DEFAULT_COND`).

    Args:
        parser (argparse.ArgumentParser): the subcommand's parser.
        help_text (str): what c is used for; the default is appended.
        sweep (bool): accept a comma list (parse it with :func:`parse_conds`) instead of one float.
    """
    from gtplus_models.enhanced_supervision import DEFAULT_COND
    parser.add_argument('--cond', type=str if sweep else float, default=str(DEFAULT_COND) if sweep else DEFAULT_COND,
                        help=f'{help_text} (default {DEFAULT_COND})')


def parse_conds(text):
    """``'0,0.3,1'`` -> [0.0, 0.3, 1.0]; ValueError unless every value is a number in [0,1]."""
    try:
        conds = [float(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        conds = []
    if not conds or any(not 0 <= c <= 1 for c in conds):
        raise ValueError(f'--cond must be numbers in [0,1], got {text!r}')
    return conds


def parse_numbers(text, flag, cast=float):
    """``'0.5,1.5'`` -> [0.5, 1.5] (``cast`` int: ``'2,3,4'`` -> [2, 3, 4]); None -> None (the flag's default).

    ValueError naming ``flag`` for anything else; the tools check the values themselves.
    """
    if text is None:
        return None
    try:
        return [cast(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        kind = 'integers' if cast is int else 'numbers'
        raise ValueError(f'{flag} must be {kind} separated by commas, got {text!r}') from None


def parse_yaml_mapping(text, flag):
    """A command-line YAML mapping (``'{num_inference_steps: 1}'``) as a dict, read with the safe loader.

    Values are never evaluated; ValueError naming ``flag`` for invalid YAML or a non-mapping.
    """
    import yaml
    try:
        mapping = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f'{flag} is not valid YAML: {err}') from None
    if mapping is None:
        return {}
    if not isinstance(mapping, dict) or not all(isinstance(k, str) for k in mapping):
        raise ValueError(f'{flag} must be a YAML mapping of argument names, got {text!r}')
    return mapping


def parse_name_paths(items, flag):
    """``['musiq=/w/musiq.pth', ...]`` -> ``{'musiq': '/w/musiq.pth'}`` (ValueError naming ``flag`` if malformed)."""
    mapping = {}
    for item in items or []:
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            raise ValueError(f'{flag} expects NAME=PATH, got {item!r}')
        mapping[name.strip()] = path.strip()
    return mapping


def check_device(name, flag='--device'):
    """``name`` as a torch.device, refused with a one-line ValueError naming ``flag`` when it is not a device or
    names a CUDA device this machine does not have (torch's own message is several lines about NVIDIA drivers).
    """
    import torch
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{flag} must be 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f'{flag} {name}: this machine has {count} CUDA device(s); use --device cpu')
    return device


def report_outputs(paths, what='wrote'):
    """Log where the output went, one line per path (basicsr's root logger; tools log at INFO)."""
    from basicsr.utils import get_root_logger
    logger = get_root_logger()
    for path in paths:
        logger.info(f'{what}: {path}')


def image_count(path):
    """The number of images in a complete LMDB or an image folder."""
    from gtplus_data.image_source import ImageSource
    return len(ImageSource(path))


def report_done(verb, what, where, started):
    """Log the closing line of a long verb: ``VERB: WHAT -> WHERE in 41.2 s``.

    Args:
        verb (str): the subcommand, e.g. 'super-resolve-gt'.
        what (str): what was written, e.g. '12 images x 3 variants'.
        where (str): the output path.
        started (float): ``time.monotonic()`` when the verb began.
    """
    import time

    from basicsr.utils import get_root_logger
    get_root_logger().info(f'{verb}: {what} -> {where} in {time.monotonic() - started:.1f} s')
