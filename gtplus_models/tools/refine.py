"""``gtplus refine``: any BasicSR restorer, then ORNet at a chosen c, over a folder or an LMDB, tiled.

Outputs (under OUT_DIR):
- ``restored/<key>.png``: the restorer's output (when a restorer is given);
- ``refined_c<c>/<key>.png``: restorer + ORNet at each c of ``conds``;
- ``sweep/<key>.png``: with several c values, a strip [input | restored | c_1 | c_2 | ...] with labels.
Files already written are skipped, so an interrupted run resumes.
"""
import os.path as osp

from gtplus_data.image_source import input_source
from gtplus_data.image_util import image_to_tensor, tensor_to_uint8, write_png
from gtplus_models.checkpoints import load_frozen_network
from gtplus_models.tools.figures import labelled_strip
from gtplus_models.tools.tiling import check_tiling, run_chain


def cond_folder(cond):
    """The output folder of restorer + ORNet at ``cond``: 'refined_c0.30'."""
    return f'refined_c{cond:.2f}'


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
        outputs = {cond: osp.join(out_dir, cond_folder(cond), f'{key}.png') for cond in conds}
        sweep_path = osp.join(out_dir, 'sweep', f'{key}.png')
        if all(osp.isfile(p) for p in outputs.values()) and (len(conds) < 2 or osp.isfile(sweep_path)):
            continue
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
            write_png(sweep_path, labelled_strip(panels))
    return list(source.keys)


def refine(input_path, out_dir, ornet_opt, ornet_weights, conds, restorer_opt=None, restorer_weights=None, tile=0,
           tile_pad=32, device='cpu'):
    """Load the networks from local files and refine every image of ``input_path`` (:func:`refine_source`).

    Args:
        input_path (str): image folder or BasicSR LMDB.
        out_dir (str): output folder.
        ornet_opt (str): YAML with the ORNet network mapping (or a basicsr option file's ``network_g``).
        ornet_weights (str): ORNet checkpoint (basicsr ``.pth`` or the official ``ORNet.pkl``).
        conds (list[float]): c values in [0,1].
        restorer_opt, restorer_weights (str | None): the restorer's YAML and checkpoint; both or neither.
        tile, tile_pad (int): tiled inference.
        device (str): 'cpu' or 'cuda[:N]'.

    Returns:
        list[str]: the keys processed.
    """
    import torch
    if bool(restorer_opt) != bool(restorer_weights):
        raise ValueError('--restorer-opt and --restorer-weights go together')
    if not conds or any(not 0 <= c <= 1 for c in conds):
        raise ValueError(f'c values must be in [0,1], got {conds}')
    check_tiling(tile, tile_pad)
    device = torch.device(device)
    source = input_source(input_path)
    restorer = None
    if restorer_opt:
        restorer = load_frozen_network(restorer_opt, restorer_weights, device, '--restorer-opt', '--restorer-weights')
    ornet = load_frozen_network(ornet_opt, ornet_weights, device, '--ornet-opt', '--ornet-weights')
    return refine_source(source, out_dir, restorer, ornet, conds, tile, tile_pad, device)
