"""Shared pytest setup: network guard (in process and in subprocesses), offline Hugging Face, small helpers."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GUARD_DIR = os.path.join(HERE, 'netguard')

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['HF_DATASETS_OFFLINE'] = '1'
os.environ['TRANSFORMERS_OFFLINE'] = '1'
os.environ['PYTHONPATH'] = os.pathsep.join([GUARD_DIR, REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p])
sys.path.insert(0, GUARD_DIR)
sys.path.insert(0, REPO)  # in-process imports use the checkout, like the subprocesses (PYTHONPATH)
import sitecustomize as _netguard  # noqa: E402  (tests/netguard/sitecustomize.py)

_netguard.install()


def _use_checkout_gtplus_compat():
    """Make in-process imports of ``gtplus_compat`` use this checkout, as the other packages do.

    The installed ``gtplus_compat.pth`` imports ``gtplus_compat`` from site-packages at interpreter start, before
    this file puts the checkout first on sys.path; in any checkout but the installed one (a git worktree), the
    tests would otherwise run the installed fixes. The swap is made only while basicsr is not imported yet, so no
    basicsr module has been patched or hooked by the installed copy.
    """
    module = sys.modules.get('gtplus_compat')
    if module is None or os.path.dirname(os.path.dirname(os.path.abspath(module.__file__))) == REPO:
        return
    if any(name == 'basicsr' or name.startswith('basicsr.') for name in sys.modules):
        raise RuntimeError(f'basicsr was imported before tests/conftest.py could use {REPO}/gtplus_compat')
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if not type(finder).__module__.startswith('gtplus_compat')]
    for name in [name for name in sys.modules if name == 'gtplus_compat' or name.startswith('gtplus_compat.')]:
        del sys.modules[name]
    import gtplus_compat  # the checkout's, now first on sys.path; it then does what gtplus_compat.pth does
    gtplus_compat.install_torchvision_alias()
    gtplus_compat.install_basicsr_hook()


_use_checkout_gtplus_compat()


def python_exe():
    """The interpreter running the tests (the project venv); subprocesses use it too."""
    return sys.executable


def gtplus_exe():
    """The installed ``gtplus`` console script beside the interpreter."""
    return os.path.join(os.path.dirname(sys.executable), 'gtplus')


def run_cli(args, cwd, timeout=600, check=True):
    """Run ``gtplus ARGS`` in ``cwd``; returns CompletedProcess with text stdout/stderr."""
    proc = subprocess.run([gtplus_exe()] + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'gtplus {args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n'
                             f'stderr:\n{proc.stderr[-4000:]}')
    return proc


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope='module')
def one_torch_thread():
    """Runs a test module's tiny torch work on one thread: on a busy 2-core machine, torch's intra-op threads
    waiting for each other make tiny steps up to a hundred times slower."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_paired_pngs(root, num=4, gt_size=32, scale=4, seed=0):
    """Write ``num`` smooth random RGB GT images and their ``scale``-times smaller LQ (bicubic) as PNG folders.

    Returns:
        tuple[str, str]: (gt_dir, lq_dir).
    """
    import cv2
    import numpy as np
    rng = np.random.RandomState(seed)
    gt_dir, lq_dir = os.path.join(root, 'GT'), os.path.join(root, 'LQ')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    for i in range(num):
        coarse = rng.rand(gt_size // 4, gt_size // 4, 3).astype(np.float32)
        gt = cv2.resize(coarse, (gt_size, gt_size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        lq = cv2.resize(gt, (gt_size // scale, gt_size // scale), interpolation=cv2.INTER_AREA)
        cv2.imwrite(os.path.join(gt_dir, f'{i:04d}.png'), (gt * 255).round().astype(np.uint8))
        cv2.imwrite(os.path.join(lq_dir, f'{i:04d}.png'), (lq * 255).round().astype(np.uint8))
    return gt_dir, lq_dir


def write_yaml(path, opt):
    import yaml
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def sr_train_options(gt_dir, lq_dir, network, scale=4, name='toy_sr', total_iter=20, gt_size=16, workers=0):
    """A complete, tiny basicsr SRModel option dict on paired PNG folders, CPU only."""
    paired = {'type': 'PairedImageDataset', 'dataroot_gt': gt_dir, 'dataroot_lq': lq_dir, 'filename_tmpl': '{}',
              'io_backend': {'type': 'disk'}}
    return {
        'name': name, 'model_type': 'SRModel', 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': dict(paired, name='toy_train', gt_size=gt_size, use_hflip=True, use_rot=True,
                          num_worker_per_gpu=workers, batch_size_per_gpu=2, dataset_enlarge_ratio=1),
            'val': dict(paired, name='toy_val'),
        },
        'network_g': network,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 10, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 5, 'save_checkpoint_freq': 10, 'use_tb_logger': False},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


TINY_MSRRESNET = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}


def console_to_current_stderr():
    """basicsr's console handler keeps the stream it was made with: an earlier test's capture, closed since. Point it
    at this test's stderr, or a row that logs before failing shows a logging traceback that is not the tool's."""
    import logging
    import sys
    for name in ('basicsr', ''):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stderr  # not setStream(): it flushes the old stream, which is closed
