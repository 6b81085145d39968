"""Safe option parsing and up-front checks for ``gtplus train`` / ``gtplus test``.

This replaces ``basicsr.utils.options.parse_options`` for the gtplus entry points. It keeps basicsr's behaviour
(same flags, same derived paths, same seeding) and changes three things:

- YAML is read with a safe loader, and ``--force_yml`` values are parsed as YAML scalars, never ``eval``/``exec``.
- The options are checked before anything is built: registry names, dataset and pretrain paths and value types.
  A problem raises :class:`OptionsError` naming the key, which the command line prints without a traceback.
- ``experiments/``, ``results/`` and ``tb_logger/`` go under the root path given (the current directory).
"""
import argparse
import os
import os.path as osp
import random
import re

import yaml

from gtplus_compat.basicsr_patches import safe_ordered_loader, torch_optimizer_class, unknown_name_message


class OptionsError(ValueError):
    """A problem in an option file or its command-line overrides, stated in terms of YAML keys."""


def add_pipeline_arguments(parser):
    """The flags of basicsr's train/test scripts, shared by ``gtplus train``, ``gtplus test`` and ``python -m``."""
    parser.add_argument('-opt', '--opt', dest='opt', type=str, required=True, help='Path to the option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='none: one process; pytorch: started by torchrun (gloo on CPU, nccl on GPU).')
    parser.add_argument('--auto_resume', action='store_true',
                        help='Resume from the latest training state of this experiment, if any.')
    parser.add_argument('--debug', action='store_true', help='Prefix the name with debug_ (frequent logs/saves).')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--force_yml', nargs='+', action='extend', default=None, metavar='KEY=VALUE',
                        help='Override options, e.g. train:total_iter=100 datasets:train:batch_size_per_gpu=2 '
                        '(the flag may be repeated).')
    return parser


def load_yaml(path):
    """Read an option file safely, keeping key order. Raises OptionsError for a missing or malformed file."""
    if not osp.isfile(path):
        raise OptionsError(f'Option file {path} does not exist.')
    try:
        with open(path) as f:
            opt = yaml.load(f, Loader=safe_ordered_loader())
    except yaml.YAMLError as err:
        raise OptionsError(f'Option file {path} is not valid YAML (safe subset): {err}') from None
    if not isinstance(opt, dict):
        raise OptionsError(f'Option file {path} must hold a mapping at the top level, got {type(opt).__name__}.')
    return opt


def apply_overrides(opt, entries):
    """Apply ``--force_yml`` entries ``a:b:c=value``; values are YAML scalars or flow lists, parsed safely.

    The parent mapping must exist (as in basicsr); the leaf may be new.
    """
    for entry in entries or []:
        if '=' not in entry:
            raise OptionsError(f'--force_yml entry {entry!r} must look like key:subkey=value.')
        keys, value = entry.split('=', 1)
        keys = [k.strip() for k in keys.split(':')]
        try:
            value = yaml.safe_load(value.strip())
        except yaml.YAMLError as err:
            raise OptionsError(f'--force_yml value in {entry!r} is not a YAML value: {err}') from None
        node = opt
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node.get(key), dict):
                raise OptionsError(f"--force_yml {entry!r}: '{':'.join(keys[:depth + 1])}' is not a mapping in "
                                   'the option file.')
            node = node[key]
        node[keys[-1]] = value


def _require_type(opt_path, value, types, what):
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        raise OptionsError(f'{opt_path} must be {what}, got {value!r} ({type(value).__name__}).')


def _require_at_least(opt_path, value, minimum):
    # An int of the right type but out of range (total_iter: 0 once saved an untrained net_g_latest.pth, exit 0).
    if value < minimum:
        raise OptionsError(f'{opt_path} must be >= {minimum}, got {value}.')


# Optimiser and scheduler keys whose values are numbers. PyYAML 1.1 reads '1e-3' (no dot) as a string, which torch
# would refuse deep inside the optimiser: such strings are read as the numbers users meant.
NUMERIC_TRAIN_KEYS = ('lr', 'weight_decay', 'eta_min', 'eps', 'momentum', 'gamma', 'betas', 'restart_weights')
FLOAT_PATTERN = re.compile(r'[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?')


def _as_number(opt_path, value):
    if isinstance(value, list):
        return [_as_number(f'{opt_path}[{i}]', v) for i, v in enumerate(value)]
    if isinstance(value, str):
        if not FLOAT_PATTERN.fullmatch(value.strip()):
            raise OptionsError(f'{opt_path} must be a number, got {value!r}.')
        return float(value)
    return value


def read_numeric_train_values(train_opt):
    """Turn numeric strings ('1e-3') under train.optim_* and train.scheduler into floats; refuse other strings."""
    for section, entry in train_opt.items():
        if not (section.startswith('optim_') or section == 'scheduler') or not isinstance(entry, dict):
            continue
        for key in NUMERIC_TRAIN_KEYS:
            if key in entry:
                entry[key] = _as_number(f'train.{section}.{key}', entry[key])


def check_types(opt, is_train):
    """Check the keys basicsr reads unguarded, so a wrong type fails here and not deep in the loop."""
    for key in ['name', 'model_type', 'num_gpu', 'datasets', 'path']:
        if key not in opt:
            raise OptionsError(f"The option file has no '{key}' key.")
    _require_type('name', opt['name'], (str, ), 'a string')
    _require_type('model_type', opt['model_type'], (str, ), 'a string')
    if opt['num_gpu'] != 'auto':
        _require_type('num_gpu', opt['num_gpu'], (int, ), "an integer >= 0 or 'auto'")
        if opt['num_gpu'] < 0:
            raise OptionsError(f"num_gpu must be >= 0 or 'auto', got {opt['num_gpu']}.")
    if opt.get('manual_seed') is not None:
        _require_type('manual_seed', opt['manual_seed'], (int, ), 'an integer')
    if 'scale' in opt:
        _require_type('scale', opt['scale'], (int, ), 'an integer')
    _require_type('datasets', opt['datasets'], (dict, ), 'a mapping of phase -> dataset options')
    _require_type('path', opt['path'], (dict, ), 'a mapping')
    for phase, dataset in opt['datasets'].items():
        _require_type(f'datasets.{phase}', dataset, (dict, ), 'a mapping')
        for key, entry in walk_datasets(f'datasets.{phase}', dataset):
            for name, minimum in (('batch_size_per_gpu', 1), ('num_worker_per_gpu', 0), ('gt_size', 1),
                                  ('dataset_enlarge_ratio', 1), ('repeat', 1)):
                if entry.get(name) is not None:
                    _require_type(f'{key}.{name}', entry[name], (int, ), 'an integer')
                    _require_at_least(f'{key}.{name}', entry[name], minimum)
    if is_train:
        if not isinstance(opt.get('train'), dict):
            raise OptionsError("A training option file needs a 'train' mapping.")
        if 'train' not in opt['datasets']:
            raise OptionsError('A training option file needs a datasets.train entry.')
        total = opt['train'].get('total_iter')
        if isinstance(total, float) and total.is_integer():
            opt['train']['total_iter'] = total = int(total)
        _require_type('train.total_iter', total, (int, ), 'an integer')
        _require_at_least('train.total_iter', total, 1)
        read_numeric_train_values(opt['train'])
        logger_opt = opt.get('logger') or {}
        for key in ['print_freq', 'save_checkpoint_freq']:
            value = logger_opt.get(key)
            if isinstance(value, float) and value.is_integer():
                logger_opt[key] = value = int(value)
            _require_type(f'logger.{key}', value, (int, ), 'an integer')
            _require_at_least(f'logger.{key}', value, 1)
        if opt.get('val') is not None:
            val_freq = opt['val'].get('val_freq')
            if isinstance(val_freq, float) and val_freq.is_integer():
                opt['val']['val_freq'] = val_freq = int(val_freq)
            _require_type('val.val_freq', val_freq, (int, ), 'an integer')
            _require_at_least('val.val_freq', val_freq, 1)


def walk_datasets(key, dataset):
    """Yield ``(key, mapping)`` for a dataset's options and, recursively, those of the datasets it is made of (the
    ``datasets:`` list of GTPlusConcatDataset), keyed like ``datasets.train.datasets[1]``."""
    yield key, dataset
    entries = dataset.get('datasets')
    if entries is None:
        return
    _require_type(f'{key}.datasets', entries, (list, ), 'a list of dataset option mappings')
    for index, entry in enumerate(entries):
        _require_type(f'{key}.datasets[{index}]', entry, (dict, ), 'a dataset option mapping')
        yield from walk_datasets(f'{key}.datasets[{index}]', entry)


def _check_registered(registry, name, key):
    if name not in registry:
        raise OptionsError(f'{key}: {unknown_name_message(registry._name, name, list(registry.keys()))}')


def check_registry_names(opt):
    """Every ``type`` the option file names must be registered (after gtplus and basicsr are imported)."""
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
    _check_registered(MODEL_REGISTRY, opt['model_type'], 'model_type')
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict):
            if 'type' not in value:
                raise OptionsError(f'{key} has no type.')
            _check_registered(ARCH_REGISTRY, value['type'], f'{key}.type')
    for phase, dataset in opt['datasets'].items():
        for key, entry in walk_datasets(f'datasets.{phase}', dataset):
            if 'type' not in entry:
                raise OptionsError(f'{key} has no type.')
            _check_registered(DATASET_REGISTRY, entry['type'], f'{key}.type')
    for key, value in (opt.get('train') or {}).items():
        # Loss options end in _opt; optimisers and schedulers are torch classes, not registry entries.
        if key.endswith('_opt') and not key.startswith('optim') and isinstance(value, dict) and 'type' in value:
            _check_registered(LOSS_REGISTRY, value['type'], f'train.{key}.type')
    check_optimizers_and_scheduler(opt.get('train') or {})
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(metric, dict) and 'type' in metric:
            _check_registered(METRIC_REGISTRY, metric['type'], f'val.metrics.{name}.type')


SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')


def check_optimizers_and_scheduler(train_opt):
    """optim_* types must be torch.optim classes; the scheduler one basicsr builds."""
    for key, value in train_opt.items():
        if key.startswith('optim_') and isinstance(value, dict):
            try:
                torch_optimizer_class(value.get('type'))
            except ValueError as err:
                raise OptionsError(f'train.{key}.type: {err}') from None
    scheduler = (train_opt.get('scheduler') or {}).get('type')
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise OptionsError(f"train.scheduler.type: '{scheduler}' is not one of {', '.join(SCHEDULERS)}.")


def check_paths(opt):
    """Every ``dataroot_*``, ``meta_info_file`` (nested dataset lists included) and ``pretrain_network_*`` given must
    exist."""
    for phase, dataset in opt['datasets'].items():
        for prefix, entry in walk_datasets(f'datasets.{phase}', dataset):
            backend = (entry.get('io_backend') or {}).get('type', 'disk')
            for key, value in entry.items():
                if not (key.startswith('dataroot') or key == 'meta_info_file') or value is None or \
                        backend == 'memcached':
                    continue
                for path in value if isinstance(value, list) else [value]:
                    if not isinstance(path, str):
                        raise OptionsError(f'{prefix}.{key} must be a path string, got {path!r}.')
                    if not osp.exists(osp.expanduser(path)):
                        raise OptionsError(f'{prefix}.{key} points to {path}, which does not exist.')
    for key, value in opt['path'].items():
        if key.startswith('pretrain_network') and value is not None:
            if not isinstance(value, str) or not osp.isfile(osp.expanduser(value)):
                raise OptionsError(f'path.{key} points to {value}, which is not a file. Put the checkpoint there '
                                   'or set the key to ~.')


def _arguments_of(cls):
    """``{name: inspect.Parameter}`` a class's constructor takes (without self), and whether it takes ``**kwargs``."""
    import inspect
    params = dict(inspect.signature(cls).parameters)
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {name: p for name, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}, var_keyword


def _check_argument_type(key, value, default):
    """A string where the argument defaults to a number, a bool or a list is a quoting mistake (``width: '8'``)
    that torch would report deep in the first convolution. Other types are left alone: archs often accept more than
    their default's type (``res_scale: 0.1`` for a default of 1, a tuple ``img_size``)."""
    if isinstance(value, str) and isinstance(default, (bool, int, float, list, tuple)):
        kind = 'true or false' if isinstance(default, bool) else 'a list' if isinstance(default, (list, tuple)) \
            else 'a number'
        raise OptionsError(f'{key} must be {kind} (its default is {default!r}), got the string {value!r}; remove '
                           'the quotes.')


def check_constructor_arguments(key, cls, entry):
    """The keys of a ``network_*`` (or loss) mapping must be arguments of its class, of the right kind.

    Args:
        key (str): the option key, e.g. 'network_g'.
        cls (type): the registered class.
        entry (dict): the mapping, ``type`` included.
    """
    import inspect
    params, var_keyword = _arguments_of(cls)
    for name, value in entry.items():
        if name == 'type':
            continue
        if name not in params:
            if var_keyword:
                continue
            raise OptionsError(f"{key}.{name}: {cls.__name__} takes no argument '{name}' (it takes: "
                               f"{', '.join(params) or 'nothing'}).")
        default = params[name].default
        _check_argument_type(f'{key}.{name}', value, None if default is inspect.Parameter.empty else default)
    missing = [name for name, p in params.items() if p.default is inspect.Parameter.empty and name not in entry]
    if missing:
        raise OptionsError(f"{key}: {cls.__name__} needs {', '.join(missing)}.")


def check_network_arguments(opt):
    """Every ``network_*`` and loss mapping against its class's constructor, and ``network_g``'s upscaling against
    ``scale``."""
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY

    from gtplus_models.dataset_checks import network_scale
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict):
            check_constructor_arguments(key, ARCH_REGISTRY.get(value['type']), value)
    for key, value in (opt.get('train') or {}).items():
        if key.endswith('_opt') and not key.startswith('optim') and isinstance(value, dict) and 'type' in value:
            check_constructor_arguments(f'train.{key}', LOSS_REGISTRY.get(value['type']), value)
    network = opt.get('network_g')
    if isinstance(network, dict) and 'scale' in opt:
        upscale = network_scale(network)
        if upscale is not None and upscale != opt['scale']:
            raise OptionsError(f"network_g ({network['type']}) upscales by {upscale} but scale is {opt['scale']}: "
                               'set both to the factor between your GT and LQ images.')


def check_device(opt):
    import torch
    if opt['num_gpu'] not in (0, 'auto') and not torch.cuda.is_available():
        raise OptionsError(f"num_gpu is {opt['num_gpu']} but this machine has no CUDA device; set num_gpu: 0 to "
                           'train on the CPU.')


def check_options(opt, is_train):
    """All up-front checks; raises OptionsError on the first problem."""
    check_types(opt, is_train)
    check_registry_names(opt)
    check_network_arguments(opt)
    check_paths(opt)
    check_device(opt)
    from gtplus_models.dataset_checks import check_datasets
    try:
        check_datasets(opt, walk_datasets)
    except (ValueError, OSError) as err:  # each message already names the key and the file
        raise OptionsError(str(err)) from None


def derive_paths(opt, root_path, is_train):
    """basicsr's derived directories, rooted at ``root_path``."""
    for key, val in opt['path'].items():
        if isinstance(val, str) and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(val)
    if is_train:
        experiments_root = osp.join(root_path, 'experiments', opt['name'])
        opt['path'].update(experiments_root=experiments_root, models=osp.join(experiments_root, 'models'),
                           training_states=osp.join(experiments_root, 'training_states'), log=experiments_root,
                           visualization=osp.join(experiments_root, 'visualization'))
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        # basicsr's test loop indexes val.save_img and val.suffix unguarded; give them basicsr's usual defaults.
        opt['val'] = opt.get('val') or {}
        opt['val'].setdefault('save_img', True)
        opt['val'].setdefault('suffix', None)
        results_root = osp.join(root_path, 'results', opt['name'])
        opt['path'].update(results_root=results_root, log=results_root,
                           visualization=osp.join(results_root, 'visualization'))


def parse_options(root_path, is_train=True, args=None):
    """Parse, override, check and complete an option file, as ``basicsr.utils.options.parse_options`` does.

    Args:
        root_path (str): Where experiments/, results/ and tb_logger/ go.
        is_train (bool): Training (True) or testing (False).
        args (argparse.Namespace | list[str] | None): Parsed flags, a raw argv list, or None for ``sys.argv``.

    Returns:
        tuple[dict, argparse.Namespace]: The options and the flags.
    """
    import torch
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info, init_dist

    if not isinstance(args, argparse.Namespace):
        args = add_pipeline_arguments(argparse.ArgumentParser()).parse_args(args)
    opt = load_yaml(args.opt)
    apply_overrides(opt, args.force_yml)
    if args.debug and not str(opt.get('name', '')).startswith('debug'):
        opt['name'] = 'debug_' + str(opt.get('name'))
    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train
    check_options(opt, is_train)

    opt['dist'] = args.launcher != 'none'
    if opt['dist']:
        # As in basicsr, dist_params (often {backend: nccl, port: ...}) only applies to slurm; torchrun picks the
        # backend from the device: gloo on CPU, nccl on GPU.
        slurm_params = (opt.get('dist_params') or {}) if args.launcher == 'slurm' else {}
        init_dist(args.launcher, **slurm_params)
    opt['rank'], opt['world_size'] = get_dist_info()

    if opt.get('manual_seed') is None:
        opt['manual_seed'] = random.randint(1, 10000)
    set_random_seed(opt['manual_seed'] + opt['rank'])

    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ['dataroot_gt', 'dataroot_lq']:
            if isinstance(dataset.get(key), str):
                dataset[key] = osp.expanduser(dataset[key])
    derive_paths(opt, os.path.abspath(root_path), is_train)
    return opt, args
