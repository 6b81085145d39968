"""State-dict normalisation for checkpoints from basicsr, DDP and the official CFMG.pkl / ORNet.pkl, and a short
account of why a state dict does not fit a network (no file I/O)."""
from collections import OrderedDict

import torch

PARAM_KEYS = ('params_ema', 'params', 'state_dict')


def normalize_state_dict(obj, param_key=None):
    """Return a clean ``{name: tensor}`` state dict.

    Accepts a plain state dict (the official ``.pkl`` files), one whose keys carry DDP's ``module.`` prefix, or a
    wrapper dict with a ``params`` / ``params_ema`` / ``state_dict`` key (basicsr checkpoints).

    Args:
        obj (dict): what ``torch.load`` returned.
        param_key (str | None): which wrapper key to take; None picks the first of params_ema, params, state_dict.
    """
    if not isinstance(obj, dict):
        raise TypeError(f'expected a state dict (a mapping), got {type(obj).__name__}')
    keys = [param_key] if param_key else [k for k in PARAM_KEYS if k in obj]
    if keys and isinstance(obj.get(keys[0]), dict):
        obj = obj[keys[0]]
    elif param_key:
        raise KeyError(f"checkpoint has no '{param_key}' entry (keys: {sorted(obj)[:10]})")
    return OrderedDict((k[len('module.'):] if str(k).startswith('module.') else k, v) for k, v in obj.items())


def _names(names, limit, describe=str):
    """'a, b, c (+4 more)': the first ``limit`` of ``names`` in sorted order, each as ``describe(name)``."""
    names = sorted(names, key=str)
    more = f' (+{len(names) - limit} more)' if len(names) > limit else ''
    return ', '.join(describe(name) for name in names[:limit]) + more


def _shape(tensor):
    return 'x'.join(str(n) for n in tensor.shape) or 'scalar'


def state_dict_mismatch(expected, loaded, network_name, strict=True, limit=3):
    """Say in one line why ``loaded`` does not fit a network whose own state dict is ``expected``.

    PyTorch's ``load_state_dict`` lists every missing and unexpected key (hundreds of lines for a checkpoint of
    another network); this counts them and names the first few, so the cause (another network, or other widths) is
    plain.

    Args:
        expected (dict[str, Tensor]): the network's ``state_dict()``.
        loaded (dict[str, Tensor]): the normalised checkpoint (:func:`normalize_state_dict`).
        network_name (str): the network's class name, for the message.
        strict (bool): every key must match in name and shape (basicsr's ``strict_load_*: true``); False accepts
            missing, extra and reshaped tensors (basicsr then skips the reshaped ones) as long as some tensor fits,
            since loading nothing would leave a silently random network.
        limit (int): how many names of each kind to show.

    Returns:
        str: '' when ``loaded`` fits; otherwise a message that reads after "the checkpoint", e.g. "holds 84 tensors,
        none of which match MSRResNet's 20 (missing: conv_first.weight, ...; unexpected: ...); is it the checkpoint
        of another network?".
    """
    tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        return f'holds no tensors (keys: {_names(loaded, limit) or "none"}); is it a training state or ' \
               'another file rather than network weights?'
    missing = set(expected) - set(tensors)
    unexpected = set(tensors) - set(expected)
    reshaped = {k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape}
    matched = len(set(expected) & set(tensors)) - len(reshaped)
    if not strict and matched:
        return ''
    if not (missing or unexpected or reshaped):
        return ''
    details = [f'{label}: {_names(keys, limit)}' for label, keys in (('missing', missing), ('unexpected', unexpected))
               if keys]
    if reshaped:
        details.append('other shapes: ' + _names(
            reshaped, limit, lambda k: f'{k} {_shape(tensors[k])} here, {_shape(expected[k])} in the network'))
    if missing or unexpected:
        hint = 'is it the checkpoint of another network?'
    else:
        hint = 'was it trained with other network options (widths, blocks, scale)?'
    verb = 'matches' if matched == 1 else 'match'
    return (f"holds {len(tensors)} tensors, {matched or 'none'} of which {verb} {network_name}'s {len(expected)} "
            f"({'; '.join(details)}); {hint}")
