"""State-dict normalisation for checkpoints from basicsr, DDP and the official CFMG.pkl / ORNet.pkl (no file I/O)."""
from collections import OrderedDict

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
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in obj.items())
