"""Shared timing helpers for the benchmark scripts (not a benchmark itself: the Makefile runs bench_*.py)."""
import statistics
import time

import torch


def interleaved_medians(fns, repeats, warmup=1):
    """Median seconds of each callable, timed round-robin under ``torch.inference_mode``.

    Interleaving makes a change in machine load hit every row alike, so ratios between rows stay meaningful.

    Args:
        fns (dict[str, callable]): name -> zero-argument callable.
        repeats (int | dict[str, int]): timed calls per callable, or per-name counts (fewer for slow rows).
        warmup (int): untimed calls of each callable first.

    Returns:
        dict[str, float]: name -> median seconds.
    """
    counts = repeats if isinstance(repeats, dict) else {name: repeats for name in fns}
    times = {name: [] for name in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for round_index in range(max(counts.values())):
            for name, fn in fns.items():
                if round_index < counts.get(name, 0):
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def interleaved_training_medians(fns, repeats, warmup=2):
    """Median seconds per call of each callable, round-robin, with gradients (interleaved_medians runs under
    inference_mode, which a training step cannot).

    Args:
        fns (dict[str, callable]): name -> zero-argument callable (e.g. one training step).
        repeats (int): timed calls per callable.
        warmup (int): untimed calls of each callable first.

    Returns:
        dict[str, float]: name -> median seconds.
    """
    times = {name: [] for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def timed_step(model, data):
    """A basicsr model's training iteration as a zero-argument callable: ``feed_data(data)`` then
    ``optimize_parameters`` with the iteration counted from 1, as basicsr's loop does."""
    counter = [0]

    def step():
        counter[0] += 1
        model.feed_data(data)
        model.optimize_parameters(counter[0])
    return step
