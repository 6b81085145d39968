"""Building a degradation synthesizer from its YAML block and a local weights file (the one loading route of
``SynthesizedSRModel``, ``gtplus synthesize`` and the quickstart).

A synthesizer YAML (``synth.yml``) holds one ``network_synth:`` block, ``{type: <registered Synthesizer>, ...}``;
the same block goes into a training option file. Weights load into the synthesizer's :meth:`weights_module`
(for ``UndertrainedReconstructionSynthesizer``: its reconstruction network, from a ``ReconstructionModel``
snapshot), never into the synthesizer as a whole, so a snapshot is an ordinary state dict of that network.
"""
import os.path as osp
import re

from gtplus_models.checkpoints import CheckpointError, load_into, load_state_dict_file, read_network_opt

SYNTH_KEY = 'network_synth'
_SNAPSHOT_NAME = re.compile(r'epoch[_-]?(\d+)', re.IGNORECASE)


def snapshot_label(epoch):
    """What ``ReconstructionModel`` passes to basicsr's ``save_network`` as the iteration of the snapshot of
    ``epoch``: the file is then ``models/net_g_epoch<epoch>.pth``."""
    return f'epoch{int(epoch)}'


def snapshot_epoch(path, checkpoint=None):
    """The training epoch of a weights file, or None when neither the checkpoint nor the name tells it.

    Args:
        path (str): the file; ``epoch<K>`` (also ``epoch_<K>``, ``epoch-<K>``) in its name gives K, as in the
            ``net_g_epoch<K>.pth`` snapshots of ReconstructionModel (:func:`snapshot_label`).
        checkpoint (object | None): what the file holds, if already read; an integer ``epoch`` entry wins over
            the name.
    """
    if isinstance(checkpoint, dict):
        epoch = checkpoint.get('epoch')
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            return epoch
    match = _SNAPSHOT_NAME.search(osp.basename(str(path)))
    return int(match.group(1)) if match else None


def read_synth_opt(path, key='--synth-opt'):
    """The ``network_synth`` block of a YAML file (or a file holding the block itself: ``{type: ...}``), as
    :func:`gtplus_models.checkpoints.read_network_opt` reads network blocks."""
    return read_network_opt(path, key, SYNTH_KEY)


def load_synthesizer(synth_opt, weights_path=None, device='cpu', opt_key=SYNTH_KEY, weights_key='--synth-weights'):
    """Build a registered synthesizer, load its weights, freeze it and put it in eval mode on ``device``.

    Args:
        synth_opt (dict): ``{'type': <registered Synthesizer>, **kwargs}`` (a ``network_synth`` block).
        weights_path (str | None): local weights of its :meth:`weights_module`; required when that has weights,
            refused when there is none.
        device (str | torch.device): where it runs.
        opt_key, weights_key (str): the keys or flags that named the block and the file, for errors.

    Returns:
        Synthesizer: HR batch [B,3,H,W] RGB [0,1] -> LQ batch [B,3,H/scale,W/scale] RGB [0,1].

    Raises:
        CheckpointError: the block does not build a synthesizer, or the weights do not fit.
        FileNotFoundError: weights required but missing.
    """
    from gtplus_arch.synthesizer_arch import build_synthesizer
    try:
        synth = build_synthesizer(synth_opt)
    except (TypeError, KeyError, ValueError) as err:  # an unknown type, keyword or value: name the block
        text = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise CheckpointError(f'{opt_key} ({synth_opt.get("type") if isinstance(synth_opt, dict) else synth_opt}): '
                              f'{text}') from None
    target = synth.weights_module()
    if target is None:
        if weights_path:
            raise CheckpointError(f'{weights_key} ({weights_path}): {type(synth).__name__} has no weights to load')
    elif not weights_path:
        raise FileNotFoundError(f'{weights_key} is required: {type(synth).__name__} needs the weights of its '
                                f'{type(target).__name__} (a ReconstructionModel snapshot or a .pth state dict)')
    else:
        load_into(target, load_state_dict_file(weights_path, weights_key), weights_path, weights_key)
    synth.to(device).eval()
    for param in synth.parameters():
        param.requires_grad_(False)
    return synth
