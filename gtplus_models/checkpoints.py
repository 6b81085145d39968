"""Loading network weights from local files: basicsr checkpoints and the official CFMG.pkl / ORNet.pkl format.

Every load uses ``torch.load(..., weights_only=True)``: a checkpoint from the internet can never run code. A missing
file is an immediate FileNotFoundError naming the option key and the path.
"""
import os.path as osp

import torch

from gtplus_arch.state_dict import normalize_state_dict


def require_file(path, key):
    """Raise FileNotFoundError naming ``key`` unless ``path`` is an existing file."""
    if not path or not osp.isfile(osp.expanduser(str(path))):
        raise FileNotFoundError(f'{key} points to {path}, which is not a file. Put the checkpoint there or fix the '
                                'path.')
    return osp.expanduser(str(path))


def load_state_dict_file(path, key='weights'):
    """Read a state dict saved by basicsr (``{'params': ...}``), by the official code (plain, maybe ``module.``
    prefixed) or by DDP, and return the clean state dict.

    Args:
        path (str): the file.
        key (str): the option key or flag that named the file, for the error message.
    """
    loaded = torch.load(require_file(path, key), map_location='cpu', weights_only=True)
    return normalize_state_dict(loaded)


def build_frozen_network(network_opt, weights_path, key, device):
    """Build a registered network, load its weights strictly, freeze it and put it in eval mode on ``device``.

    Frozen networks (a pretrained restorer, a frozen CFMG, an SR enhancer) are never wrapped in DDP or saved.

    Args:
        network_opt (dict): ``{'type': ..., **kwargs}`` as in a ``network_*`` YAML entry.
        weights_path (str | None): local checkpoint; may be None only for a network without parameters or buffers
            (a training-free one such as ``GTPlusDetailEnhancer``).
        key (str): the option key of ``weights_path`` (named in errors).
        device (torch.device): where the network runs.
    """
    from basicsr.archs import build_network
    net = build_network(dict(network_opt))
    if not weights_path and net.state_dict():
        # A network with state and no weights is an error, never a silently random network.
        raise FileNotFoundError(f'{key} is required: {network_opt.get("type")} has {len(net.state_dict())} weight '
                                'tensors to load (only a network without parameters, such as GTPlusDetailEnhancer, '
                                'runs without weights)')
    if weights_path:
        try:
            net.load_state_dict(load_state_dict_file(weights_path, key), strict=True)
        except RuntimeError as err:
            raise RuntimeError(f'{key} ({weights_path}) does not match {network_opt.get("type")}: {err}') from None
    net.to(device).eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net


class OfficialCheckpointMixin:
    """For basicsr models: ``load_network`` that also reads official plain / ``module.``-prefixed state dicts
    (CFMG.pkl, ORNet.pkl), not only basicsr's ``{'params': ...}`` files. Always ``weights_only=True``."""

    def load_network(self, net, load_path, strict=True, param_key='params'):
        from basicsr.utils import get_root_logger
        net = self.get_bare_model(net)
        loaded = torch.load(require_file(load_path, 'pretrain_network path'), map_location='cpu', weights_only=True)
        if isinstance(loaded, dict) and param_key not in loaded:
            param_key = None  # a plain state dict, or params without params_ema: take what is there
        state = normalize_state_dict(loaded, param_key)
        get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path} [{param_key or "plain"}].')
        self._print_different_keys_loading(net, state, strict)
        net.load_state_dict(state, strict=strict)


def read_network_opt(path, key):
    """A network mapping from a YAML file: either ``{type: ..., ...}`` or a basicsr option file's ``network_g``.

    Args:
        path (str): the YAML file (read with the safe loader).
        key (str): the flag or option key that named it, for errors.

    Returns:
        dict: ``{'type': ..., **kwargs}``.
    """
    import yaml
    if not osp.isfile(path):
        raise FileNotFoundError(f'{key}: {path} does not exist')
    with open(path) as f:
        opt = yaml.safe_load(f)
    if isinstance(opt, dict) and 'type' not in opt and isinstance(opt.get('network_g'), dict):
        opt = opt['network_g']
    if not isinstance(opt, dict) or 'type' not in opt:
        raise ValueError(f'{key}: {path} must hold a network mapping with a type (or a network_g entry)')
    return opt


def load_frozen_network(opt_path, weights_path, device, opt_key='network options', weights_key='weights'):
    """:func:`build_frozen_network` from a YAML file (:func:`read_network_opt`) and a local checkpoint.

    Args:
        opt_path (str): YAML with the network mapping.
        weights_path (str | None): the checkpoint (None: only for a network without parameters).
        device (torch.device | str): where the network runs.
        opt_key, weights_key (str): the flags or keys that named the two files, for errors.
    """
    return build_frozen_network(read_network_opt(opt_path, opt_key), weights_path, weights_key, device)
