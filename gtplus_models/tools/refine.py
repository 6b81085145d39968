"""``gtplus refine``: any BasicSR restorer, then ORNet at a chosen c, over a folder or an LMDB, tiled.

Outputs (under OUT_DIR):
- ``restored/<key>.png``: the restorer's output (when a restorer is given);
- ``refined_c<c>/<key>.png``: restorer + ORNet at each c of ``conds``;
- ``sweep/<key>.png``: with several c values, a strip [input | restored | c_1 | c_2 | ...] with labels.
Files already written are skipped, so an interrupted run resumes.

Faults are found before the networks run (exit 2 from ``gtplus refine``, one line naming the flag or path): an
output path that is a file, weights that do not fit, a YAML that builds another network than ORNet, and unreadable
inputs. Every input still to refine is decoded first, and all unreadable ones are listed by path with nothing
written, as ``make-lmdb`` does, rather than stopping after hours at the first bad file.
"""
import os.path as osp

from gtplus_arch import ORNet
from gtplus_data.image_source import input_source
from gtplus_data.image_util import ImageReadError, image_to_tensor, tensor_to_uint8, write_png
from gtplus_models.checkpoints import load_frozen_network
from gtplus_data.figures import labelled_strip
from gtplus_models.tools.tiling import check_tiling, run_chain


def cond_folder(cond):
    """The output folder of restorer + ORNet at ``cond``: 'refined_c0.30'."""
    return f'refined_c{cond:.2f}'


def sweep_paths(out_dir, key, values, folder=cond_folder):
    """Every file ``key`` gets from a verb that writes one image per value (refine's c, restore's score):
    {value: OUT/<folder(value)>/<key>.png}, and with several values 'sweep': OUT/sweep/<key>.png (the strip)."""
    paths = {value: osp.join(out_dir, folder(value), f'{key}.png') for value in values}
    if len(values) > 1:
        paths['sweep'] = osp.join(out_dir, 'sweep', f'{key}.png')
    return paths


def is_done(out_dir, key, values, folder=cond_folder):
    """Whether every output of ``key`` (:func:`sweep_paths`) exists (a rerun skips it)."""
    return all(osp.isfile(path) for path in sweep_paths(out_dir, key, values, folder).values())


def check_output_folder(out_dir, name='OUT_DIR'):
    """Refuse an output folder that is, or lies under, an existing file, before anything runs.

    Args:
        out_dir (str): the folder (it need not exist yet).
        name (str): the argument or flag that named it, for the message.

    Raises:
        NotADirectoryError: naming the file.
    """
    path = osp.abspath(out_dir)
    while not osp.exists(path) and osp.dirname(path) != path:
        path = osp.dirname(path)
    if not osp.isdir(path):
        where = 'is' if path == osp.abspath(out_dir) else f'lies under {path}, which is'
        raise NotADirectoryError(f'{name} {out_dir} {where} an existing file, not a folder; give a folder path')


def check_readable(source, keys, done='refined'):
    """Decode every image of ``keys`` once; raise listing every unreadable one by path.

    Args:
        done (str): what the verb would have done, for the message ('refined', 'restored').

    Raises:
        ImageReadError: "2 unreadable image(s) in IN, nothing refined: cannot decode image ...: IN/a.png; ...".
    """
    from tqdm import tqdm
    errors = []
    for key in tqdm(keys, desc='check inputs', unit='img', disable=None):
        try:
            source.read(key)
        except ImageReadError as error:  # names the path already
            errors.append(str(error))
    if errors:
        raise ImageReadError(f'{len(errors)} unreadable image(s) in {source.path}, nothing {done}: ' +
                             '; '.join(errors))


def refine_source(source, out_dir, restorer, ornet, conds, tile=0, tile_pad=32, device='cpu'):
    """Refine every image of ``source`` at each c; write PNGs and sweep strips.

    Args:
        source (ImageSource): the inputs (RGB [0,1] after decoding).
        out_dir (str): output folder (see the module docstring).
        restorer (nn.Module | None): frozen restorer, [1,3,H,W] [0,1] -> [1,3,sH,sW]; None refines the input as is.
        ornet (nn.Module): frozen ORNet, called as ``ornet(x, c)``.
        conds (list[float]): c values in [0,1].
        tile (int), tile_pad (int): tiled inference (see :func:`gtplus_models.tools.tiling.tiled_forward`).
        device (str | torch.device): where the networks run.

    Returns:
        list[str]: the keys processed.
    """
    from tqdm import tqdm
    for key in tqdm(source.keys, desc='refine', unit='img', disable=None):
        if is_done(out_dir, key, conds):
            continue
        outputs = sweep_paths(out_dir, key, conds)
        img = image_to_tensor(source.read(key), device)
        restored = run_chain([(restorer, False)], img, tile=tile, tile_pad=tile_pad) if restorer else img
        panels = [('input', tensor_to_uint8(img))]
        if restorer is not None:
            panels.append(('restored', tensor_to_uint8(restored)))
            write_png(osp.join(out_dir, 'restored', f'{key}.png'), panels[-1][1])
        for cond in conds:
            refined = tensor_to_uint8(run_chain([(ornet, True)], restored, cond, tile, tile_pad))
            write_png(outputs[cond], refined)
            panels.append((f'ORNet c={cond:g}', refined))
        if len(conds) > 1:
            write_png(outputs['sweep'], labelled_strip(panels))
    return list(source.keys)


def refine(input_path, out_dir, ornet_opt, ornet_weights, conds, restorer_opt=None, restorer_weights=None, tile=0,
           tile_pad=32, device='cpu'):
    """Load the networks from local files and refine every image of ``input_path`` (:func:`refine_source`).

    Args:
        input_path (str): image folder or BasicSR LMDB.
        out_dir (str): output folder.
        ornet_opt (str): YAML with the ORNet network mapping (or a basicsr option file's ``network_g``); another
            network is refused.
        ornet_weights (str): ORNet checkpoint (basicsr ``.pth`` or the official ``ORNet.pkl``).
        conds (list[float]): c values in [0,1].
        restorer_opt, restorer_weights (str | None): the restorer's YAML (any network; windowed ones such as SwinIR
            are padded to their window, see :func:`gtplus_models.tools.tiling.size_rule`) and checkpoint; both or
            neither.
        tile, tile_pad (int): tiled inference.
        device (str): 'cpu' or 'cuda[:N]'.

    Returns:
        list[str]: the keys processed.

    Raises:
        ValueError (ImageReadError, CheckpointError), OSError: see the module docstring.
    """
    import torch
    if bool(restorer_opt) != bool(restorer_weights):
        given, missing = ('--restorer-opt', '--restorer-weights') if restorer_opt else ('--restorer-weights',
                                                                                        '--restorer-opt')
        raise ValueError(f'{given} needs {missing}: --restorer-opt and --restorer-weights go together (give neither '
                         'to refine the input as is)')
    if not conds or any(not 0 <= c <= 1 for c in conds):
        raise ValueError(f'c values must be in [0,1], got {conds}')
    check_tiling(tile, tile_pad)
    check_output_folder(out_dir)
    device = torch.device(device)
    source = input_source(input_path)
    restorer = None
    if restorer_opt:
        restorer = load_frozen_network(restorer_opt, restorer_weights, device, '--restorer-opt', '--restorer-weights')
    ornet = load_frozen_network(ornet_opt, ornet_weights, device, '--ornet-opt', '--ornet-weights', ORNet)
    check_readable(source, [key for key in source.keys if not is_done(out_dir, key, conds)])
    return refine_source(source, out_dir, restorer, ornet, conds, tile, tile_pad, device)
