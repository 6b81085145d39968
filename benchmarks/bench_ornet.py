"""ORNet presets against the restorer they follow: parameters, MACs and CPU latency at 256x256.

Run: ``python benchmarks/bench_ornet.py [--size 256] [--threads 2] [--repeats 5]``. Prints one table; every row is
measured in the same run, interleaved, so the latency ratios compare like with like. The reference is GTPlusNAFNet in
the SIDD width-32 configuration (the restorer ORNet refines in the paper's SIDD experiment).

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; MACs = FLOPs / 2).
Latency: median of ``--repeats`` timed forwards after one warm-up, batch 1, ``torch.inference_mode``, rows
interleaved (benchmarks/timing.py).
Spec reference: the official ORNet (width 64) has 17.9M parameters and ran at 1.69x the restorer's latency on the
reference CPU; the lightest preset should run at <= 0.15x.
"""
import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from gtplus_arch import ORNET_PRESETS, GTPlusNAFNet, ORNet
from timing import interleaved_medians


def count_macs(net, *inputs):
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(*inputs)
    return counter.get_total_flops() / 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    img = torch.rand(1, 3, args.size, args.size)
    nets = {'GTPlusNAFNet (SIDD w32, reference)': (GTPlusNAFNet().eval(), (img, ))}
    for name in ORNET_PRESETS:
        nets[f'ORNet {name}'] = (ORNet(preset=name).eval(), (img, 0.3))

    latencies = interleaved_medians({name: (lambda n=net, i=inputs: n(*i)) for name, (net, inputs) in nets.items()},
                                    args.repeats)
    reference = latencies[next(iter(nets))]
    print(f'{args.size}x{args.size}, batch 1, CPU, {args.threads} threads, median of {args.repeats}')
    print(f'| {"network":<36} | {"params (M)":>10} | {"GMACs":>7} | {"latency (s)":>11} | {"x restorer":>10} |')
    print(f'| {"-" * 36} | {"-" * 10} | {"-" * 7} | {"-" * 11} | {"-" * 10} |')
    for name, (net, inputs) in nets.items():
        params = sum(p.numel() for p in net.parameters()) / 1e6
        macs = count_macs(net, *inputs) / 1e9
        latency = latencies[name]
        print(f'| {name:<36} | {params:10.3f} | {macs:7.2f} | {latency:11.3f} | {latency / reference:10.3f} |')


if __name__ == '__main__':
    main()
