"""Loading network weights from local files: basicsr checkpoints and the official CFMG.pkl / ORNet.pkl format.

Every load uses ``torch.load(..., weights_only=True)``: a checkpoint from the internet can never run code. Every
route (the tools' frozen networks, and training's ``path.pretrain_network_*`` through basicsr's
``BaseModel.load_network``, which :func:`patch_basicsr_load_network` replaces) reads files with
:func:`read_checkpoint` and loads them with :func:`load_into`, so every fault is one :class:`CheckpointError` line
naming the flag or option key and the file:

- a missing file, an empty file, bytes that are no checkpoint, a pickle that ``weights_only`` refuses (one that
  could run code: still refused, without torch's page of advice), a list or a tensor instead of a state dict;
- a state dict of another network, or of other widths: counted, with the first few names and shapes
  (:func:`gtplus_arch.state_dict.state_dict_mismatch`) instead of PyTorch's list of every key.

A network YAML that builds another network than the one expected (an ORNet option file given as ``--cfmg-opt``) is
refused before any weights are read (``expected_type``).
"""
import os.path as osp
import re
import warnings

import torch

from gtplus_arch.state_dict import normalize_state_dict, state_dict_mismatch


class CheckpointError(ValueError):
    """A weights file (or a network YAML) that cannot serve its network, stated with the flag or key and the path.

    ``gtplus VERB`` prints it as one line with exit status 2; so does ``gtplus train``/``test`` for the
    ``path.pretrain_network_*`` files of an option file.
    """


def require_file(path, key):
    """Raise FileNotFoundError naming ``key`` unless ``path`` is an existing file."""
    if not path or not osp.isfile(osp.expanduser(str(path))):
        raise FileNotFoundError(f'{key} points to {path}, which is not a file. Put the checkpoint there or fix the '
                                'path.')
    return osp.expanduser(str(path))


def _torch_reason(err):
    """The first informative sentence of a ``torch.load`` error, without torch's page of advice."""
    boilerplate = ('Weights only load failed', 'Please file an issue', 'Check the documentation', 'WeightsUnpickler')
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(boilerplate)] or lines or [type(err).__name__]
    return lines[0].split('. ')[0].rstrip('.')


def read_checkpoint(path, key):
    """``torch.load(path, weights_only=True)`` with every failure as one line naming ``key`` and ``path``.

    Args:
        path (str): the file.
        key (str): the flag or option key that named it (``--ornet-weights``, ``path.pretrain_network_g``).

    Returns:
        object: what the file holds (for a checkpoint, a dict).

    Raises:
        FileNotFoundError: no such file. CheckpointError: an empty file, not a checkpoint, or refused.
    """
    path = require_file(path, key)
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{key} ({path}) is an empty file; was the download or copy interrupted?')
    try:
        with warnings.catch_warnings():
            # Pickles not written by torch.save (protocol 4) load fine but warn; the warning is not the user's concern.
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return torch.load(path, map_location='cpu', weights_only=True)
    except MemoryError:
        raise
    except Exception as err:  # torch.load raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        refused = re.search(r'\bGLOBAL ([\w.]+)', str(err))
        if refused:
            raise CheckpointError(
                f'{key} ({path}) is refused by torch.load(weights_only=True): it refers to {refused.group(1)}, not '
                'only to tensors and plain containers, so loading it could run code. Re-save the weights from a '
                'trusted copy with torch.save(net.state_dict(), path).') from None
        raise CheckpointError(f'{key} ({path}) is not a PyTorch checkpoint that torch.load can read (truncated, '
                              f'damaged or another format?): {_torch_reason(err)}') from None


def checkpoint_state_dict(loaded, path, key, param_key=None):
    """The ``{name: tensor}`` state dict in what :func:`read_checkpoint` returned (see
    :func:`gtplus_arch.state_dict.normalize_state_dict` for the accepted layouts).

    Raises:
        CheckpointError: for anything but a mapping (a list, a bare tensor), naming ``key`` and ``path``.
    """
    if not isinstance(loaded, dict):
        raise CheckpointError(f'{key} ({path}) holds a {type(loaded).__name__}, not a state dict (a mapping of '
                              'parameter names to tensors, optionally under params / params_ema)')
    try:
        return normalize_state_dict(loaded, param_key)
    except KeyError as err:  # a params entry that is not a mapping
        raise CheckpointError(f'{key} ({path}): {err.args[0]}') from None


def load_state_dict_file(path, key='weights'):
    """Read a state dict saved by basicsr (``{'params': ...}``), by the official code (plain, maybe ``module.``
    prefixed) or by DDP, and return the clean state dict.

    Args:
        path (str): the file.
        key (str): the option key or flag that named the file, for the error message.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`read_checkpoint` and :func:`checkpoint_state_dict`.
    """
    return checkpoint_state_dict(read_checkpoint(path, key), path, key)


def load_into(net, state, path, key, strict=True, before_load=None):
    """``net.load_state_dict(state)``, refused in one line when ``state`` does not fit.

    Args:
        net (nn.Module): the bare network.
        state (dict): the normalised state dict.
        path (str), key (str): the file and the flag or key that named it, for the message.
        strict (bool): as basicsr's ``strict_load_*`` (see :func:`gtplus_arch.state_dict.state_dict_mismatch`).
        before_load (callable | None): ``before_load(net, state, strict)`` once the state fits (basicsr's
            ``_print_different_keys_loading``, which logs the differences a non-strict load accepts and drops
            reshaped tensors).

    Raises:
        CheckpointError: e.g. "--ornet-weights (x.pth) holds 84 tensors, none of which match MSRResNet's 20
            (missing: ...; unexpected: ...); is it the checkpoint of another network?".
    """
    problem = state_dict_mismatch(net.state_dict(), state, type(net).__name__, strict)
    if problem:
        raise CheckpointError(f'{key} ({path}) {problem}')
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if before_load is not None:
        before_load(net, state, strict)
    net.load_state_dict(state, strict=strict)


def check_network_type(network_opt, expected_type, source):
    """Refuse a network mapping whose ``type`` is not ``expected_type`` (or a subclass), before building it.

    Args:
        network_opt (dict): ``{'type': ..., ...}``.
        expected_type (type | None): e.g. ``ORNet``; None accepts any network (a restorer).
        source (str): where the mapping came from, e.g. '--ornet-opt (ornet.yml)'.

    Raises:
        CheckpointError: "--ornet-opt (cfmg.yml) builds CFMG, not ORNet".
    """
    if expected_type is None:
        return
    from basicsr.utils.registry import ARCH_REGISTRY
    built = ARCH_REGISTRY.get(network_opt['type'])  # an unknown name: the registry's error names close matches
    if not (isinstance(built, type) and issubclass(built, expected_type)):
        raise CheckpointError(f'{source} builds {network_opt["type"]}, not {expected_type.__name__}')


def build_frozen_network(network_opt, weights_path, key, device, expected_type=None, source=None):
    """Build a registered network, load its weights strictly, freeze it and put it in eval mode on ``device``.

    Frozen networks (a pretrained restorer, a frozen CFMG, an SR enhancer) are never wrapped in DDP or saved.

    Args:
        network_opt (dict): ``{'type': ..., **kwargs}`` as in a ``network_*`` YAML entry.
        weights_path (str | None): local checkpoint; may be None only for a network without parameters or buffers
            (a training-free one such as ``GTPlusDetailEnhancer``).
        key (str): the option key of ``weights_path`` (named in errors).
        device (torch.device): where the network runs.
        expected_type (type | None): the class the network must be (ORNet for refine's ``--ornet-opt``); None: any.
        source (str | None): where ``network_opt`` came from, for errors (default: its type).

    Raises:
        CheckpointError: another network than ``expected_type``, options the network rejects, weights that do not
            fit. FileNotFoundError: a missing weights file, or none given for a network with parameters.
    """
    from basicsr.archs import build_network
    source = source or f'the {network_opt.get("type")} options'
    check_network_type(network_opt, expected_type, source)
    try:
        net = build_network(dict(network_opt))
    except TypeError as err:  # an unknown or missing constructor argument
        raise CheckpointError(f'{source}: {network_opt.get("type")} rejects these options: {err}') from None
    if not weights_path and net.state_dict():
        # A network with state and no weights is an error, never a silently random network.
        raise FileNotFoundError(f'{key} is required: {network_opt.get("type")} has {len(net.state_dict())} weight '
                                'tensors to load (only a network without parameters, such as GTPlusDetailEnhancer, '
                                'runs without weights)')
    if weights_path:
        load_into(net, load_state_dict_file(weights_path, key), weights_path, key)
    net.to(device).eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net


def _option_key(opt, load_path):
    """The ``path.pretrain_network_*`` key of an option dict that names ``load_path`` (for messages)."""
    for name, value in ((opt or {}).get('path') or {}).items():
        if name.startswith('pretrain_network') and value == load_path:
            return f'path.{name}'
    return 'path.pretrain_network_*'


def load_network(self, net, load_path, strict=True, param_key='params'):
    """basicsr's ``BaseModel.load_network`` (same arguments) through :func:`read_checkpoint` and :func:`load_into`.

    It also reads the official plain or ``module.``-prefixed state dicts (CFMG.pkl, ORNet.pkl), takes what there is
    when ``param_key`` is absent, and raises :class:`CheckpointError` naming the ``path.pretrain_network_*`` key
    and the file where basicsr printed a traceback or PyTorch's list of every mismatched key.
    """
    from basicsr.utils import get_root_logger
    net = self.get_bare_model(net)
    key = _option_key(getattr(self, 'opt', None), load_path)
    loaded = read_checkpoint(load_path, key)
    if isinstance(loaded, dict) and param_key not in loaded:
        param_key = None  # a plain state dict, or params without params_ema: take what is there
    state = checkpoint_state_dict(loaded, load_path, key, param_key)
    get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path} [{param_key or "plain"}].')
    # Not strict: basicsr logs the differences and skips reshaped tensors (fine-tuning with another head).
    load_into(net, state, load_path, key, strict, before_load=self._print_different_keys_loading)


def patch_basicsr_load_network():
    """Make :func:`load_network` every basicsr model's ``load_network`` (gtplus's models and basicsr's own SRModel
    alike), so ``path.pretrain_network_*`` files load and fail the same way in every model. Idempotent."""
    from basicsr.models.base_model import BaseModel
    BaseModel.load_network = load_network


def read_network_opt(path, key, block='network_g'):
    """A network mapping from a YAML file: either ``{type: ..., ...}`` or an option file's ``block`` entry.

    Args:
        path (str): the YAML file (read with the safe loader).
        key (str): the flag or option key that named it, for errors.
        block (str): the option key holding the mapping in a full option file (``network_synth`` for a
            synthesizer YAML).

    Returns:
        dict: ``{'type': ..., **kwargs}``.
    """
    import yaml
    if not osp.isfile(path):
        raise FileNotFoundError(f'{key}: {path} does not exist')
    try:
        with open(path) as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as err:
        reason = ' '.join(str(err).split())
        raise CheckpointError(f'{key}: {path} is not valid YAML ({reason})') from None
    if isinstance(opt, dict) and 'type' not in opt and isinstance(opt.get(block), dict):
        opt = opt[block]
    if not isinstance(opt, dict) or 'type' not in opt:
        raise CheckpointError(f'{key}: {path} must hold a network mapping with a type (or a {block} entry)')
    return dict(opt)


def load_frozen_network(opt_path, weights_path, device, opt_key='network options', weights_key='weights',
                        expected_type=None):
    """:func:`build_frozen_network` from a YAML file (:func:`read_network_opt`) and a local checkpoint.

    Args:
        opt_path (str): YAML with the network mapping.
        weights_path (str | None): the checkpoint (None: only for a network without parameters).
        device (torch.device | str): where the network runs.
        opt_key, weights_key (str): the flags or keys that named the two files, for errors.
        expected_type (type | None): the class the YAML must build (e.g. ORNet); None: any network.
    """
    return build_frozen_network(read_network_opt(opt_path, opt_key), weights_path, weights_key, device,
                                expected_type, source=f'{opt_key} ({opt_path})')
