"""``gtplus refine``: any BasicSR restorer, then ORNet at a chosen c, over a folder or an LMDB, tiled.

Outputs (under OUT_DIR):
- ``restored/<key>.png``: the restorer's output (when a restorer is given);
- ``refined_c<c>/<key>.png``: restorer + ORNet at each c of ``--cond``;
- ``sweep/<key>.png``: with several c values, a strip [input | restored | c_1 | c_2 | ...] with labels.
Files already written are skipped, so an interrupted run resumes.
"""
import os
import os.path as osp

import numpy as np
import torch
import yaml

from gtplus_models.checkpoints import build_frozen_network
from gtplus_models.tiling import run_chain


def read_network_opt(path, key):
    """A network mapping from a YAML file: either ``{type: ..., ...}`` or a basicsr option file's ``network_g``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{key}: {path} does not exist')
    with open(path) as f:
        opt = yaml.safe_load(f)
    if isinstance(opt, dict) and 'type' not in opt and isinstance(opt.get('network_g'), dict):
        opt = opt['network_g']
    if not isinstance(opt, dict) or 'type' not in opt:
        raise ValueError(f'{key}: {path} must hold a network mapping with a type (or a network_g entry)')
    return opt


def image_to_tensor(img, device):
    """HxWx3 float32 RGB [0,1] -> Tensor[1,3,H,W]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float().to(device)


def tensor_to_uint8(tensor):
    """Tensor[1,3,H,W] in [0,1] -> HxWx3 uint8 RGB."""
    return (tensor[0].clamp(0, 1).cpu().numpy().transpose(1, 2, 0) * 255.).round().astype(np.uint8)


def write_png(path, rgb_uint8):
    """Write an RGB uint8 image atomically (temporary file + rename)."""
    import cv2
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = path + '.tmp.png'
    if not cv2.imwrite(tmp, rgb_uint8[..., ::-1]):
        raise OSError(f'cannot write {path}')
    os.replace(tmp, path)


def cond_folder(cond):
    return f'refined_c{cond:.2f}'


def load_refine_networks(args, device):
    """(restorer | None, ornet) from the command-line paths, frozen and in eval mode."""
    restorer = None
    if args.restorer_opt:
        restorer = build_frozen_network(read_network_opt(args.restorer_opt, '--restorer-opt'), args.restorer_weights,
                                        '--restorer-weights', device)
    ornet = build_frozen_network(read_network_opt(args.ornet_opt, '--ornet-opt'), args.ornet_weights,
                                 '--ornet-weights', device)
    return restorer, ornet


def refine_source(source, out_dir, restorer, ornet, conds, tile=0, tile_pad=32, device='cpu'):
    """Refine every image of ``source`` (an ImageSource) at each c; write PNGs and sweep strips.

    Returns:
        list[str]: the keys processed.
    """
    from tqdm import tqdm

    from gtplus_models.figures import labelled_strip
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
