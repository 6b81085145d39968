"""``gtplus restore``: a score-conditioned network (IQPIRNet, or any network whose ``forward(x, score)`` returns an
image or a tuple starting with the image) at one or more target quality scores, over a folder or an LMDB, tiled.

Outputs (under OUT_DIR):
- ``score_<s>/<key>.png``: the network's output at target score s (two decimals: ``score_0.90``);
- ``sweep/<key>.png``: with several scores, a strip [input | score=s_1 | score=s_2 | ...] with labels, at the
  output's size.
Files already written are skipped, so an interrupted run resumes and a finished one writes nothing new; every PNG is
written atomically.

A network of one input size (IQPIRNet: :func:`gtplus_models.tools.tiling.fixed_input_size`) gets exactly that size
in every call: smaller images are padded (reflect) and cropped back, larger ones run in overlapping windows of that
size (:func:`gtplus_models.tools.tiling.fixed_size_forward`). Other networks are tiled as ``gtplus refine`` tiles
(``tile`` 0: whole images).

Faults are found before the network runs, with nothing written (exit 2 from ``gtplus restore``, one line naming the
flag, key or path): scores outside [0,1] or two that name one folder, a YAML without a network mapping
(``network_g``), a network whose forward takes no score, weights of another network, a tile the network cannot take,
an empty or unreadable input, an output path that is a file.
"""
import inspect

from gtplus_data.figures import labelled_strip
from gtplus_data.image_source import input_source
from gtplus_data.image_util import image_to_tensor, tensor_to_uint8, write_png
from gtplus_models.checkpoints import CheckpointError, load_frozen_network
from gtplus_models.tools.refine import check_output_folder, check_readable, is_done, sweep_paths
from gtplus_models.tools.tiling import check_network_tiling, check_tiling, fixed_input_size, run_chain

# The best quality: IQPIR's top score bin, what a user restoring an image asks for unless sweeping.
DEFAULT_SCORE = 1.0
# Context around each tile; for a fixed-size network at most a quarter of its side (32 at IQPIRNet's 512, 4 at 16).
DEFAULT_TILE_PAD = 32


def score_folder(score):
    """The output folder of target ``score``: 'score_0.90'."""
    return f'score_{score:.2f}'


def check_scores(scores, flag='--score'):
    """Refuse an empty list, a score outside [0,1] (NaN included), or two scores that name one output folder.

    Raises:
        ValueError: naming ``flag``.
    """
    if not scores or any(not 0 <= s <= 1 for s in scores):
        raise ValueError(f'{flag} must be numbers in [0,1], got {", ".join(f"{s:g}" for s in scores) or "none"}')
    folders = [score_folder(s) for s in scores]
    clash = sorted({f for f in folders if folders.count(f) > 1})
    if clash:
        raise ValueError(f'{flag} {scores}: several scores write {", ".join(clash)}; give scores that differ in the '
                         'first two decimals')


def check_score_conditioned(net, source):
    """Refuse a network whose ``forward`` cannot be called as ``forward(x, score)``, before any image runs.

    Raises:
        CheckpointError: "--opt (msrresnet.yml) builds MSRResNet, whose forward(x) takes no score; ...".
    """
    try:
        inspect.signature(net.forward).bind(None, None)
    except TypeError:
        params = ', '.join(inspect.signature(net.forward).parameters)
        raise CheckpointError(f'{source} builds {type(net).__name__}, whose forward({params}) takes no score; '
                              'restore needs a score-conditioned network, forward(x, score) (IQPIRNet, '
                              'ScoreConditionedRestorer)') from None


def default_tile_pad(net):
    """:data:`DEFAULT_TILE_PAD`, at most a quarter of a fixed input size (windows keep half their side)."""
    size = fixed_input_size(net)
    return min(DEFAULT_TILE_PAD, size // 4) if size else DEFAULT_TILE_PAD


def restore_source(source, out_dir, net, scores, tile=0, tile_pad=None, device='cpu'):
    """Restore every image of ``source`` at each target score; write PNGs and sweep strips.

    Args:
        source (ImageSource): the inputs (RGB [0,1] after decoding).
        out_dir (str): output folder (see the module docstring).
        net (nn.Module): frozen score-conditioned network, ``net(x, score)`` with x [1,3,H,W] RGB [0,1] and score a
            Tensor[1] in [0,1], returning [1,3,sH,sW] RGB [0,1] or a tuple starting with it.
        scores (list[float]): target scores in [0,1].
        tile (int): tile size (0: whole images; a fixed-size network takes 0 or its size).
        tile_pad (int | None): context around each tile (None: :func:`default_tile_pad`).
        device (str | torch.device): where the network runs.

    Returns:
        list[str]: the keys processed.
    """
    from tqdm import tqdm
    tile_pad = default_tile_pad(net) if tile_pad is None else tile_pad
    for key in tqdm(source.keys, desc='restore', unit='img', disable=None):
        if is_done(out_dir, key, scores, score_folder):
            continue
        outputs = sweep_paths(out_dir, key, scores, score_folder)
        img = image_to_tensor(source.read(key), device)
        panels = [('input', tensor_to_uint8(img))]
        for score in scores:
            restored = tensor_to_uint8(run_chain([(net, True)], img, score, tile, tile_pad))
            write_png(outputs[score], restored)
            panels.append((f'score={score:g}', restored))
        if len(scores) > 1:
            write_png(outputs['sweep'], labelled_strip(panels, height=panels[-1][1].shape[0]))
    return list(source.keys)


def restore(input_path, out_dir, opt_path, weights_path, scores=(DEFAULT_SCORE, ), tile=0, tile_pad=None,
            device='cpu'):
    """Load a score-conditioned network from local files and restore every image of ``input_path`` at each target
    score (:func:`restore_source`).

    Args:
        input_path (str): image folder or BasicSR LMDB.
        out_dir (str): output folder.
        opt_path (str): YAML with the network mapping, or a basicsr training/test option file (its ``network_g``).
        weights_path (str): checkpoint: basicsr ``{'params': ...}`` / ``{'params_ema': ...}`` (params_ema first, as
            basicsr's test does) or a plain state dict.
        scores (sequence[float]): target scores in [0,1]; several write a sweep strip per image.
        tile (int): tile size in pixels (0: whole images, or the input size of a fixed-size network).
        tile_pad (int | None): context pixels around each tile (None: :func:`default_tile_pad`).
        device (str): 'cpu' or 'cuda[:N]'.

    Returns:
        list[str]: the keys processed.

    Raises:
        ValueError (ImageReadError, CheckpointError), OSError: see the module docstring.
    """
    import torch
    scores = [float(s) for s in scores]
    check_scores(scores)
    check_tiling(tile, 0 if tile_pad is None else tile_pad)
    check_output_folder(out_dir)
    device = torch.device(device)
    source = input_source(input_path)
    net = load_frozen_network(opt_path, weights_path, device, '--opt', '--weights')
    check_score_conditioned(net, f'--opt ({opt_path})')
    tile_pad = default_tile_pad(net) if tile_pad is None else tile_pad
    check_network_tiling(net, tile, tile_pad)
    size = fixed_input_size(net)
    if size:
        from basicsr.utils import get_root_logger
        get_root_logger().info(f'{type(net).__name__} takes exactly {size}x{size} inputs: smaller images are padded, '
                               f'larger ones run in {size}x{size} windows with {tile_pad} pixels of context')
    check_readable(source, [key for key in source.keys if not is_done(out_dir, key, scores, score_folder)], 'restored')
    return restore_source(source, out_dir, net, scores, tile, tile_pad, device)
