"""Peak memory (max RSS) and wall time of `gtplus refine` on a 2048² image, untiled and tiled, side by side.

Each run is a fresh `gtplus refine` process (random-weight networks saved here: memory and time do not depend on
the weights). The restorer is the quickstart's NAFNet (width 16) and ORNet the 'light' preset; pass --sidd to use
the SIDD width-32 NAFNet restorer instead.

    python benchmarks/bench_refine_memory.py [--size 2048] [--tiles 0,1024,512,256] [--sidd]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import torch
import yaml

RESTORERS = {
    'quickstart': {'type': 'GTPlusNAFNet', 'width': 16, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1],
                   'dec_blk_nums': [1, 1, 1]},
    'sidd': {'type': 'GTPlusNAFNet', 'width': 32, 'middle_blk_num': 12, 'enc_blk_nums': [2, 2, 4, 8],
             'dec_blk_nums': [2, 2, 2, 2]},
}
ORNET = {'type': 'ORNet', 'preset': 'light'}


def save_network(folder, name, opt):
    import gtplus_arch  # noqa: F401
    from basicsr.archs import build_network
    torch.save({'params': build_network(dict(opt)).state_dict()}, os.path.join(folder, f'{name}.pth'))
    with open(os.path.join(folder, f'{name}.yml'), 'w') as f:
        yaml.safe_dump(opt, f)
    return os.path.join(folder, f'{name}.yml'), os.path.join(folder, f'{name}.pth')


def run_refine(folder, images, restorer, ornet, tile):
    """One refine process; returns (seconds, its max RSS in MiB).

    A fresh intermediate Python starts refine and reports RUSAGE_CHILDREN, so each row measures only its own run.
    """
    gtplus = os.path.join(os.path.dirname(sys.executable), 'gtplus')
    cmd = [gtplus, 'refine', images, os.path.join(folder, f'out_tile{tile}'), '--restorer-opt', restorer[0],
           '--restorer-weights', restorer[1], '--ornet-opt', ornet[0], '--ornet-weights', ornet[1], '--tile',
           str(tile)]
    probe = ('import resource, subprocess, sys, time; t = time.time(); subprocess.run(sys.argv[1:], check=True, '
             'capture_output=True); print(time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')
    out = subprocess.run([sys.executable, '-c', probe] + cmd, check=True, capture_output=True, text=True).stdout
    seconds, peak_kib = out.split()
    return float(seconds), float(peak_kib) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--size', type=int, default=2048)
    parser.add_argument('--tiles', default='0,1024,512,256')
    parser.add_argument('--sidd', action='store_true')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        images = os.path.join(folder, 'images')
        os.makedirs(images)
        rng = np.random.RandomState(0)
        coarse = rng.rand(args.size // 16, args.size // 16, 3).astype(np.float32)
        img = cv2.resize(coarse, (args.size, args.size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(images, 'big.png'), (np.clip(img, 0, 1) * 255).astype(np.uint8))
        restorer = save_network(folder, 'restorer', RESTORERS['sidd' if args.sidd else 'quickstart'])
        ornet = save_network(folder, 'ornet', ORNET)
        rows = []
        for tile in [int(t) for t in args.tiles.split(',')]:
            seconds, peak = run_refine(folder, images, restorer, ornet, tile)
            rows.append((tile, seconds, peak))
    base_seconds, base_peak = rows[0][1], rows[0][2]
    print(f'gtplus refine on one {args.size}x{args.size} image, restorer '
          f'{"SIDD NAFNet w32" if args.sidd else "quickstart NAFNet w16"} + ORNet light, CPU '
          f'{torch.get_num_threads()} threads')
    print('| tile | time (s) | peak RSS (MiB) | time / untiled | peak / untiled |')
    print('| --- | --- | --- | --- | --- |')
    for tile, seconds, peak in rows:
        label = 'untiled' if tile == 0 else str(tile)
        print(f'| {label} | {seconds:.1f} | {peak:.0f} | {seconds / base_seconds:.2f} | {peak / base_peak:.2f} |')


if __name__ == '__main__':
    main()
