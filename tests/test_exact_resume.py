"""Exact resume (:mod:`gtplus_compat.exact_resume`): a run interrupted at an epoch boundary or mid-epoch and
resumed with ``--auto_resume`` ends with the same weights, bit for bit, as an uninterrupted run, with 0 and 2
DataLoader workers. basicsr's own resume (the same state without its ``exact_resume`` entry, as states written
before it existed) still works, is logged as not exact, and ends elsewhere: the tests cannot pass vacuously.

The training draws random numbers everywhere a real one does: python ``random`` in basicsr's crops and flips,
torch's generator in the dataset (in the main process, or in each worker, seeded from the iterator's base seed)
and in the model (dropout), and in validation (its DataLoader iterator draws a seed) right after a checkpoint.
All runs train in this process (``gtplus_models.train.train_main``), each in its own folder.
"""
import contextlib
import logging
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MSRRESNET, make_paired_pngs, sr_train_options, write_yaml
from gtplus_compat import exact_resume
from gtplus_models.train import train_main

TOTAL_ITER = 12
NUM_IMAGES, BATCH = 8, 2  # 4 batches per epoch: iter 8 ends epoch 1, iter 6 is its middle
CUTS = {'epoch_boundary': 8, 'mid_epoch': 6}
SAVE_FREQ, VAL_FREQ = 2, 3  # a checkpoint every 2 iters; validation at 3, 6 (right after a checkpoint), 9, 12


def _register_test_components():
    """A dataset and a network that draw from torch's generator (basicsr's PairedImageDataset draws only from
    python ``random``, and MSRResNet from nothing)."""
    from basicsr.archs.srresnet_arch import MSRResNet
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY

    class ExactResumeNoisyPairs(PairedImageDataset):
        """basicsr's paired crops and flips, plus uniform noise on the LQ crop from torch's generator."""

        def __getitem__(self, index):
            item = super().__getitem__(index)
            item['lq'] = item['lq'] + 0.05 * torch.rand(1)
            return item

    class ExactResumeDropoutSR(MSRResNet):
        """MSRResNet whose output goes through dropout while training: each step draws from torch's generator."""

        def forward(self, x):
            return F.dropout(super().forward(x), 0.1, self.training)

    if 'ExactResumeNoisyPairs' not in DATASET_REGISTRY:
        DATASET_REGISTRY.register(ExactResumeNoisyPairs)
        ARCH_REGISTRY.register(ExactResumeDropoutSR)


_register_test_components()


# Every run of a comparison uses the same thread count, so bit equality does not depend on it.
pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_paired_pngs(str(tmp_path_factory.mktemp('exact_resume_data')), num=NUM_IMAGES)


def options(data, total_iter, workers, prefetch_mode=None, batch=BATCH):
    gt_dir, lq_dir = data
    network = dict(TINY_MSRRESNET, type='ExactResumeDropoutSR')
    opt = sr_train_options(gt_dir, lq_dir, network, total_iter=total_iter, gt_size=16, workers=workers)
    opt['datasets']['train']['type'] = 'ExactResumeNoisyPairs'
    opt['datasets']['train']['batch_size_per_gpu'] = batch
    if prefetch_mode:
        opt['datasets']['train'].update(prefetch_mode=prefetch_mode, pin_memory=True)
    opt['logger'].update(save_checkpoint_freq=SAVE_FREQ, print_freq=100)
    opt['val']['val_freq'] = VAL_FREQ
    return opt


@contextlib.contextmanager
def basicsr_messages():
    """Collect what basicsr's logger (which does not propagate to the root logger) says meanwhile, at INFO.

    basicsr's get_root_logger sets the level only when it first runs with a log file: a model built in this process
    before (another test file) leaves it at the root's WARNING, and the INFO lines would be lost.
    """
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def train(run_dir, data, total_iter, workers, resume=False, prefetch_mode=None, batch=BATCH):
    """Train in ``run_dir`` (experiments/ goes there) up to ``total_iter``; returns (final weights, log lines)."""
    os.makedirs(run_dir, exist_ok=True)
    opt_file = write_yaml(os.path.join(run_dir, f'train_{total_iter}.yml'),
                          options(data, total_iter, workers, prefetch_mode, batch))
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        with basicsr_messages() as messages:
            assert train_main(['-opt', opt_file] + (['--auto_resume'] if resume else [])) == 0
    finally:
        os.chdir(cwd)
    latest = os.path.join(run_dir, 'experiments', 'toy_sr', 'models', 'net_g_latest.pth')
    return torch.load(latest, weights_only=True)['params'], messages


def state_path(run_dir, current_iter):
    return os.path.join(run_dir, 'experiments', 'toy_sr', 'training_states', f'{current_iter}.state')


def edit_state(run_dir, current_iter, edit):
    """Rewrite a training state through ``edit(state)``."""
    path = state_path(run_dir, current_iter)
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def interrupted(run_dir, data, cut, workers, prefetch_mode=None):
    """Train to ``cut`` only, as if killed right after its checkpoint; check that checkpoint is the latest one."""
    train(run_dir, data, cut, workers, prefetch_mode=prefetch_mode)
    states = os.listdir(os.path.dirname(state_path(run_dir, cut)))
    assert max(int(name.split('.')[0]) for name in states if name.endswith('.state')) == cut
    return torch.load(state_path(run_dir, cut), weights_only=True)


def same_weights(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope='module')
def uninterrupted(data, tmp_path_factory):
    """{workers: final weights of an uninterrupted run}; two runs agree bit for bit."""
    root = tmp_path_factory.mktemp('uninterrupted')
    weights = {workers: train(str(root / f'w{workers}'), data, TOTAL_ITER, workers)[0] for workers in (0, 2)}
    assert same_weights(weights[0], train(str(root / 'again'), data, TOTAL_ITER, 0)[0])
    return weights


@pytest.mark.parametrize('cut_name', list(CUTS))
@pytest.mark.parametrize('workers', [0, 2])
def test_resume_is_exact(uninterrupted, data, tmp_path, workers, cut_name):
    cut = CUTS[cut_name]
    run_dir = str(tmp_path / 'exact')
    state = interrupted(run_dir, data, cut, workers)
    entry = state[exact_resume.STATE_KEY]
    assert (state['epoch'], entry['batches'], entry['batches_per_epoch']) == (1, cut - 4, 4)
    # The same state without the entry, as written before it existed: basicsr's resume.
    old_dir = str(tmp_path / 'old_format')
    shutil.copytree(run_dir, old_dir)
    edit_state(old_dir, cut, lambda s: s.pop(exact_resume.STATE_KEY))

    resumed, messages = train(run_dir, data, TOTAL_ITER, workers, resume=True)
    assert same_weights(resumed, uninterrupted[workers])
    assert f'Exact resume: skipped {cut - 4} of 4 batches of epoch 1' in ' '.join(messages)
    assert not any('not exact' in message for message in messages)

    old_resumed, old_messages = train(old_dir, data, TOTAL_ITER, workers, resume=True)
    assert any(message.startswith(f"Resume is not exact: training state of iter {cut} has no 'exact_resume'")
               for message in old_messages)
    assert not same_weights(old_resumed, uninterrupted[workers])


def stale_rng(field):
    """An edit that replaces one random state of the entry by another one of the same run (a plausible bug)."""
    other = {'epoch_start_rng': 'rng', 'rng': 'epoch_start_rng'}[field]
    return lambda state: state[exact_resume.STATE_KEY].update({field: state[exact_resume.STATE_KEY][other]})


@pytest.mark.parametrize('workers,field', [(0, 'rng'), (2, 'rng'), (2, 'epoch_start_rng')])
def test_each_saved_random_state_matters(uninterrupted, data, tmp_path, workers, field):
    """Restoring a wrong checkpoint state (main process) or epoch-start state (workers' base seed) shows."""
    run_dir = str(tmp_path / 'run')
    interrupted(run_dir, data, CUTS['mid_epoch'], workers)
    edit_state(run_dir, CUTS['mid_epoch'], stale_rng(field))
    assert not same_weights(train(run_dir, data, TOTAL_ITER, workers, resume=True)[0], uninterrupted[workers])


def test_validation_after_a_checkpoint_is_undone(uninterrupted, data, tmp_path, monkeypatch):
    """Without restoring the checkpoint's states before the next batch, the validation that follows the checkpoint
    moves torch's generator in the uninterrupted run but not in the resumed one (which does not validate then)."""
    monkeypatch.setattr(exact_resume.LoaderPosition, 'before_load', lambda self: None)
    reference = train(str(tmp_path / 'uninterrupted'), data, TOTAL_ITER, 0)[0]
    run_dir = str(tmp_path / 'run')
    interrupted(run_dir, data, CUTS['mid_epoch'], 0)
    assert not same_weights(train(run_dir, data, TOTAL_ITER, 0, resume=True)[0], reference)


class _FakeStream:
    def wait_stream(self, other):
        pass


@pytest.fixture
def cuda_prefetcher_on_cpu(monkeypatch):
    """basicsr's CUDAPrefetcher on the CPU: with ``num_gpu: 0`` it keeps tensors on the CPU; only its streams need
    CUDA, and they become no-ops."""
    monkeypatch.setattr(torch.cuda, 'Stream', _FakeStream)
    monkeypatch.setattr(torch.cuda, 'stream', lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, 'current_stream', _FakeStream)


@pytest.mark.filterwarnings('ignore:.*pin_memory')
def test_cuda_prefetcher_resume_is_exact(data, tmp_path, cuda_prefetcher_on_cpu):
    """CUDAPrefetcher loads a batch ahead, before the step it follows; without workers that batch's augmentations
    need the random states from before its loading (``rng_before_pending``)."""
    cut = CUTS['mid_epoch']
    reference = train(str(tmp_path / 'uninterrupted'), data, TOTAL_ITER, 0, prefetch_mode='cuda')[0]
    run_dir, without_pending = str(tmp_path / 'exact'), str(tmp_path / 'without_pending')
    interrupted(run_dir, data, cut, 0, prefetch_mode='cuda')
    shutil.copytree(run_dir, without_pending)
    edit_state(without_pending, cut, lambda s: s[exact_resume.STATE_KEY].update(rng_before_pending=None))
    assert same_weights(train(run_dir, data, TOTAL_ITER, 0, resume=True, prefetch_mode='cuda')[0], reference)
    assert not same_weights(train(without_pending, data, TOTAL_ITER, 0, resume=True, prefetch_mode='cuda')[0],
                            reference)


def test_random_states_survive_weights_only_loading(tmp_path):
    """The entry's random states load with ``weights_only=True`` and restore every generator exactly."""
    import random

    import numpy as np
    np.random.randn()  # a cached Gaussian in numpy's state
    saved = exact_resume.capture_rng_state()
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item())
    torch.save({'rng': saved}, tmp_path / 'rng.pt')
    exact_resume.restore_rng_state(torch.load(tmp_path / 'rng.pt', weights_only=True)['rng'])
    assert (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item()) == expected


def test_a_changed_loader_resumes_as_basicsr_does(data, tmp_path):
    """A state whose epoch had another number of batches (batch size or data changed) cannot say where to go on:
    the saved epoch starts again from its first batch, with a warning."""
    run_dir = str(tmp_path / 'run')
    interrupted(run_dir, data, CUTS['mid_epoch'], 0)
    messages = train(run_dir, data, TOTAL_ITER, 0, resume=True, batch=2 * BATCH)[1]
    assert any(message.startswith("Resume is not exact: the training state's epoch had 4 batches, the loader now "
                                  'has 2') for message in messages)
    assert not any(message.startswith('Exact resume') for message in messages)
