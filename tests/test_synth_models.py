"""Undertrained reconstruction (issue 11): UndertrainedReconstructionSynthesizer, ReconstructionModel (snapshots at
chosen epochs), SynthesizedSRModel (pairs made online, seeded per iteration), and the tiny end-to-end chain."""
import json

import pytest
import torch

import gtplus_models  # noqa: F401  (registers every gtplus component)
from gtplus_arch import (VQVAE, VQVAE2, BicubicSynthesizer, RealESRGANSynthesizer,
                         UndertrainedReconstructionSynthesizer)
from gtplus_arch.synthesizer_arch import build_synthesizer

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY_VQVAE2 = {'type': 'VQVAE2', 'channel': 8, 'n_res_block': 1, 'n_res_channel': 4, 'embed_dim': 4, 'n_embed': 8}


def hr_batch(batch=2, size=32, seed=0):
    """Smooth random RGB images in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode='bicubic', align_corners=False).clamp(0, 1)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def undertrained(**kwargs):
    torch.manual_seed(0)
    return UndertrainedReconstructionSynthesizer(**{'reconstruction': TINY_VQVAE2, **kwargs})


# ------------------------------------------------------------------------------------------------------------ #
# UndertrainedReconstructionSynthesizer
# ------------------------------------------------------------------------------------------------------------ #


def test_undertrained_is_reconstruction_of_the_bicubic_lr():
    synth = undertrained()
    hr = hr_batch()
    out = synth(hr, seeded(1))
    assert out.shape == (2, 3, 8, 8) and out.dtype == hr.dtype
    assert 0 <= out.min() and out.max() <= 1 and torch.equal(out, (out * 255).round() / 255)
    assert torch.equal(out, synth(hr, seeded(2))) and torch.equal(out, synth(hr))  # bicubic + eval VQ-VAE: no draws
    with torch.no_grad():
        expected = synth.reconstruction(BicubicSynthesizer(4)(hr))[0]
    assert torch.equal(out, synth.finish(expected, hr.dtype))
    assert synth(hr.double()).dtype == torch.float64
    assert synth.weights_module() is synth.reconstruction and isinstance(synth.reconstruction, VQVAE2)


def test_undertrained_first_stage_composes_and_draws_from_the_generator():
    stage = {'type': 'RealESRGANSynthesizer', 'preset': 'stablesr'}
    synth = undertrained(first_stage=stage)
    assert isinstance(synth.first_stage, RealESRGANSynthesizer) and synth.first_stage.scale == 4
    hr = hr_batch(size=synth.min_size() + 4 - synth.min_size() % 4)
    out = synth(hr, seeded(3))
    assert torch.equal(out, synth(hr, seeded(3))) and not torch.equal(out, synth(hr, seeded(4)))
    with torch.no_grad():
        expected = synth.reconstruction(RealESRGANSynthesizer(4, 'stablesr')(hr, seeded(3)))[0]
    assert torch.equal(out, synth.finish(expected, hr.dtype))
    with pytest.raises(ValueError, match='first_stage .*scale 2, but scale is 4'):
        undertrained(first_stage={'type': 'BicubicSynthesizer', 'scale': 2})
    with pytest.raises(ValueError, match='reconstruction is BicubicSynthesizer, a synthesizer'):
        UndertrainedReconstructionSynthesizer(reconstruction={'type': 'BicubicSynthesizer'})
    with pytest.raises(ValueError, match="reconstruction needs a 'type'"):
        UndertrainedReconstructionSynthesizer(reconstruction={'channel': 8})


def test_undertrained_never_learns_and_its_provenance_rebuilds_it():
    synth = undertrained().train()
    assert synth.training and not synth.reconstruction.training  # EMA codebooks stay frozen
    before = {k: v.clone() for k, v in synth.state_dict().items()}
    synth(hr_batch())
    assert all(torch.equal(before[k], v) for k, v in synth.state_dict().items())
    record = json.loads(json.dumps(synth.provenance()))
    assert record['reconstruction'] == TINY_VQVAE2
    assert record['first_stage'] == BicubicSynthesizer(4).provenance()
    rebuilt = build_synthesizer(record)
    rebuilt.weights_module().load_state_dict(synth.weights_module().state_dict())
    hr = hr_batch(seed=5)
    assert rebuilt.provenance() == record and torch.equal(rebuilt(hr), synth(hr))


# ------------------------------------------------------------------------------------------------------------ #
# Tiny runs through gtplus_models.train.train_main, each in its own folder
# ------------------------------------------------------------------------------------------------------------ #

NUM_HR, BATCH = 5, 2  # ceil(5 / 2) = 3 iterations per epoch
TINY_EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}
ADAM = {'type': 'Adam', 'lr': 3e-4}
SCHEDULER = {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    """(gt_dir, lq_dir): 5 smooth 32x32 HR images and their 8x8 LR (a stand-in for a real LR/HR pair)."""
    from conftest import make_paired_pngs
    return make_paired_pngs(str(tmp_path_factory.mktemp('synth_models_data')), num=NUM_HR, gt_size=32)


def hr_dataset(gt_dir, phase, **kwargs):
    entry = {'type': 'GTPlusSingleHRDataset', 'name': f'hr_{phase}', 'dataroot_gt': gt_dir,
             'io_backend': {'type': 'disk'}}
    if phase == 'train':
        entry.update(gt_size=16, use_hflip=True, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=BATCH,
                     dataset_enlarge_ratio=1)
    return dict(entry, **kwargs)


def common_options(name, model_type, total_iter, save_freq):
    return {'name': name, 'model_type': model_type, 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
            'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
            'logger': {'print_freq': 3, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
            'train': {'optim_g': dict(ADAM), 'scheduler': dict(SCHEDULER), 'total_iter': total_iter,
                      'warmup_iter': -1}}


def reconstruction_options(gt_dir, total_iter, snapshot_epochs, save_freq=3, **train_set):
    opt = common_options('recon', 'ReconstructionModel', total_iter, save_freq)
    opt['datasets'] = {'train': hr_dataset(gt_dir, 'train', **train_set), 'val': hr_dataset(gt_dir, 'val')}
    opt['network_g'] = dict(TINY_VQVAE2)
    opt['train'].update(snapshot_epochs=snapshot_epochs, latent_loss_weight=0.25)
    opt['val'] = {'val_freq': 100, 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}
    return opt


def run(run_dir, opt, resume=False):
    """Train ``opt`` in ``run_dir`` (in this process); returns what basicsr's logger said."""
    import os

    from conftest import write_yaml
    from test_exact_resume import basicsr_messages

    from gtplus_models.train import train_main
    os.makedirs(run_dir, exist_ok=True)
    path = write_yaml(os.path.join(run_dir, f'{opt["name"]}_{opt["train"]["total_iter"]}.yml'), opt)
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        with basicsr_messages() as messages:
            assert train_main(['-opt', path] + (['--auto_resume'] if resume else [])) == 0, messages[-5:]
    finally:
        os.chdir(cwd)
    return messages


def models_dir(run_dir, name='recon'):
    import os
    return os.path.join(run_dir, 'experiments', name, 'models')


def params(path):
    return torch.load(path, weights_only=True)['params']


def same(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_iterations_per_epoch_follow_basicsr():
    from gtplus_models.reconstruction_model import iterations_per_epoch
    assert iterations_per_epoch(5, 2) == 3  # the last batch of the pass counts: 6 samples >= 5 images
    assert iterations_per_epoch(8, 2) == 4
    assert iterations_per_epoch(8, 2, world_size=2) == 2  # each of 2 GPUs takes a batch per iteration
    assert iterations_per_epoch(5, 2, enlarge_ratio=3) == 8  # ceil(15 / 2)
    assert iterations_per_epoch(20000, 32) == 625


@pytest.fixture(scope='module')
def reconstruction_run(pairs, tmp_path_factory):
    """ReconstructionModel for 3 epochs (9 iterations), snapshots at epochs 1 and 2, checkpoints every 3."""
    run_dir = str(tmp_path_factory.mktemp('recon_run'))
    messages = run(run_dir, reconstruction_options(pairs[0], total_iter=9, snapshot_epochs=[1, 2]))
    return run_dir, messages


def test_a_snapshot_is_written_at_each_listed_epoch_and_nowhere_else(reconstruction_run):
    import os
    run_dir, messages = reconstruction_run
    models = models_dir(run_dir)
    snapshots = sorted(name for name in os.listdir(models) if 'epoch' in name)
    assert snapshots == ['net_g_epoch1.pth', 'net_g_epoch2.pth']
    # Epoch k ends at iteration 3k: the snapshot is the network of that iteration's checkpoint.
    assert same(params(os.path.join(models, 'net_g_epoch1.pth')), params(os.path.join(models, 'net_g_3.pth')))
    assert same(params(os.path.join(models, 'net_g_epoch2.pth')), params(os.path.join(models, 'net_g_6.pth')))
    assert not same(params(os.path.join(models, 'net_g_epoch1.pth')), params(os.path.join(models, 'net_g_epoch2.pth')))
    text = '\n'.join(messages)
    assert '3 iterations per epoch; snapshots at epochs 1 (iter 3), 2 (iter 6)' in text
    assert 'l_mse: ' in text and 'l_latent: ' in text
    assert '# psnr: ' in text  # reconstruction PSNR on the validation set


def test_resume_neither_repeats_nor_skips_a_snapshot(reconstruction_run, pairs, tmp_path):
    """Killed after iteration 4 (last checkpoint: iteration 3, where epoch 1's snapshot was written), resumed."""
    import os
    run_dir = str(tmp_path / 'resumed')
    run(run_dir, reconstruction_options(pairs[0], total_iter=4, snapshot_epochs=[1, 2]))
    os.remove(os.path.join(models_dir(run_dir), 'net_g_latest.pth'))
    first = os.path.join(models_dir(run_dir), 'net_g_epoch1.pth')
    written = os.stat(first).st_mtime_ns
    assert not os.path.exists(os.path.join(models_dir(run_dir), 'net_g_epoch2.pth'))
    messages = run(run_dir, reconstruction_options(pairs[0], total_iter=9, snapshot_epochs=[1, 2]), resume=True)
    assert [m for m in messages if m.startswith('Snapshot of epoch')] == [
        f'Snapshot of epoch 2 saved: {os.path.join(models_dir(run_dir), "net_g_epoch2.pth")}']
    assert os.stat(first).st_mtime_ns == written
    reference = models_dir(reconstruction_run[0])
    for name in ('net_g_epoch1.pth', 'net_g_epoch2.pth'):  # exact resume: the uninterrupted run's snapshots
        assert same(params(os.path.join(models_dir(run_dir), name)), params(os.path.join(reference, name)))


def test_a_snapshot_loads_into_the_synthesizer_and_the_epoch_changes_the_output(reconstruction_run, tmp_path):
    import os

    from gtplus_models.checkpoints import CheckpointError
    from gtplus_models.synthesis import load_synthesizer, snapshot_epoch
    models = models_dir(reconstruction_run[0])
    block = {'type': 'UndertrainedReconstructionSynthesizer', 'scale': 4, 'reconstruction': TINY_VQVAE2}
    key = 'path.pretrain_network_synth'
    hr = hr_batch(size=32, seed=3)
    outputs = {}
    for epoch in (1, 2):
        path = os.path.join(models, f'net_g_epoch{epoch}.pth')
        synth = load_synthesizer(block, path, 'cpu', weights_key=key)
        assert not synth.training and not any(p.requires_grad for p in synth.parameters())
        assert same(synth.weights_module().state_dict(), params(path)) and snapshot_epoch(path) == epoch
        outputs[epoch] = synth(hr)
    assert not torch.equal(outputs[1], outputs[2])  # the knob: which epoch's snapshot
    missing = str(tmp_path / 'net_g_epoch8.pth')
    with pytest.raises(FileNotFoundError) as err:
        load_synthesizer(block, missing, weights_key=key)
    assert key in str(err.value) and missing in str(err.value) and '\n' not in str(err.value)
    wrong = str(tmp_path / 'vqvae_epoch8.pth')  # a one-level VQ-VAE's snapshot, for a VQ-VAE-2 block
    torch.save({'params': VQVAE(**{k: v for k, v in TINY_VQVAE2.items() if k != 'type'}).state_dict()}, wrong)
    with pytest.raises(CheckpointError) as err:
        load_synthesizer(block, wrong, weights_key=key)
    assert str(err.value).startswith(f'{key} ({wrong}) holds') and 'VQVAE2' in str(err.value)
    assert '\n' not in str(err.value)


# ------------------------------------------------------------------------------------------------------------ #
# SynthesizedSRModel
# ------------------------------------------------------------------------------------------------------------ #


def sr_options(gt_dir, lq_dir, synth, total_iter=5, name='sr', gt_size=16, **path):
    """SynthesizedSRModel fine-tuning TINY_EDSR on HR-only training data, validated on the real pair."""
    opt = common_options(name, 'SynthesizedSRModel', total_iter, save_freq=total_iter)
    opt['datasets'] = {'train': hr_dataset(gt_dir, 'train', gt_size=gt_size),
                       'val': {'type': 'PairedImageDataset', 'name': 'real_pair', 'dataroot_gt': gt_dir,
                               'dataroot_lq': lq_dir, 'io_backend': {'type': 'disk'}}}
    opt['network_g'], opt['network_synth'] = dict(TINY_EDSR), synth
    opt['path'].update(path)
    opt['train'].update(optim_g={'type': 'Adam', 'lr': 1e-4}, pixel_opt={'type': 'L1Loss', 'loss_weight': 1.0})
    opt['val'] = {'val_freq': total_iter, 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}}
    return opt


@pytest.fixture(scope='module')
def big_pairs(tmp_path_factory):
    """Two 64x64 HR images and their 16x16 LR: room for RealESRGANSynthesizer's 48x48 crops."""
    from conftest import make_paired_pngs
    return make_paired_pngs(str(tmp_path_factory.mktemp('synth_models_big')), num=2, gt_size=64)


def build_sr_model(root, opt):
    """The model of ``opt`` as basicsr's training builds it (options parsed and checked by gtplus)."""
    from basicsr.models import build_model
    from conftest import write_yaml

    from gtplus_models.options import parse_options
    path = write_yaml(root / f'{opt["name"]}.yml', opt)
    return build_model(parse_options(str(root), True, ['-opt', path])[0])


STABLESR = {'type': 'RealESRGANSynthesizer', 'scale': 4, 'preset': 'stablesr'}


def test_pairs_are_seeded_by_manual_seed_and_iteration(big_pairs, tmp_path):
    model = build_sr_model(tmp_path, sr_options(*big_pairs, STABLESR, gt_size=48))
    assert model.net_synth is not None and not model.net_synth.training
    hr = hr_batch(size=48, seed=1)

    def pair(m, iteration):
        m.synth_iter = iteration
        m.feed_data({'gt': hr})
        assert m.lq.shape == (2, 3, 12, 12) and torch.equal(m.gt, hr)
        return m.lq.clone()

    first = pair(model, 3)
    assert torch.equal(first, pair(model, 3))  # same seed and iteration: same bytes
    assert not torch.equal(first, pair(model, 4))
    other = build_sr_model(tmp_path, dict(sr_options(*big_pairs, STABLESR, gt_size=48, name='sr2'), manual_seed=1))
    assert not torch.equal(first, pair(other, 3))
    # optimize_parameters(i) trains on iteration i's pair, whatever feed_data guessed, and counts on.
    model.synth_iter = 7
    model.feed_data({'gt': hr})
    model.optimize_parameters(3)
    assert torch.equal(model.lq, first) and model.synth_iter == 4 and 'l_pix' in model.get_current_log()
    real = {'lq': torch.rand(2, 3, 12, 12), 'gt': hr}
    model.feed_data(real)  # validation on a real pair: its LQ as it is
    assert torch.equal(model.lq, real['lq']) and model.lq_key is None


def test_resume_reproduces_the_pairs(big_pairs, tmp_path):
    from gtplus_compat import exact_resume
    model = build_sr_model(tmp_path, sr_options(*big_pairs, STABLESR, gt_size=48))
    hr = hr_batch(size=48, seed=2)
    pairs = []
    for iteration in (1, 2, 3):
        model.feed_data({'gt': hr})
        model.optimize_parameters(iteration)
        pairs.append(model.lq.clone())
    resumed = build_sr_model(tmp_path, sr_options(*big_pairs, STABLESR, gt_size=48))
    state = {'epoch': 0, 'iter': 2, 'optimizers': [o.state_dict() for o in model.optimizers],
             'schedulers': [s.state_dict() for s in model.schedulers]}
    try:
        resumed.resume_training(state)
    finally:
        exact_resume._PENDING['resume'] = None  # this state is for no training loop
    resumed.feed_data({'gt': hr})
    assert torch.equal(resumed.lq, pairs[2])


def test_hr_only_validation_synthesizes_the_same_pairs_each_time(big_pairs, tmp_path):
    from basicsr.data import build_dataloader, build_dataset
    opt = sr_options(*big_pairs, STABLESR, gt_size=48)
    opt['datasets']['val'] = hr_dataset(big_pairs[0], 'val')
    model = build_sr_model(tmp_path, opt)
    val_opt = dict(model.opt['datasets']['val'])
    loader = build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0)
    scores = []
    for _ in range(2):
        model.validation(loader, 1, None, False)
        scores.append(model.metric_results['psnr'])
    assert scores[0] == scores[1] and scores[0] > 0


def test_end_to_end_reconstruction_epochs_then_edsr_fine_tuning(pairs, tmp_path):
    """ReconstructionModel for 2 epochs -> its epoch-2 snapshot in an UndertrainedReconstructionSynthesizer -> 5
    iterations of SynthesizedSRModel fine-tuning a saved EDSR checkpoint, validated on the real LR/HR pair."""
    import os

    from basicsr.archs import build_network
    gt_dir, lq_dir = pairs
    recon_dir = str(tmp_path / 'recon')
    run(recon_dir, reconstruction_options(gt_dir, total_iter=6, snapshot_epochs=[2]))
    snapshot = os.path.join(models_dir(recon_dir), 'net_g_epoch2.pth')
    assert sorted(n for n in os.listdir(models_dir(recon_dir)) if 'epoch' in n) == ['net_g_epoch2.pth']

    torch.manual_seed(0)
    pretrained = str(tmp_path / 'edsr_x4_bicubic.pth')  # a stand-in for a bicubic-pretrained EDSR
    torch.save({'params': build_network(dict(TINY_EDSR)).state_dict()}, pretrained)
    synth = {'type': 'UndertrainedReconstructionSynthesizer', 'scale': 4, 'reconstruction': TINY_VQVAE2}
    sr_dir = str(tmp_path / 'sr')
    messages = run(sr_dir, sr_options(gt_dir, lq_dir, synth, total_iter=5, pretrain_network_g=pretrained,
                                      pretrain_network_synth=snapshot))
    text = '\n'.join(messages)
    assert f'Loading EDSR model from {pretrained}' in text
    assert f'network_synth [UndertrainedReconstructionSynthesizer] loaded with weights {snapshot}' in text
    assert 'Validation real_pair' in text and '# psnr: ' in text
    tuned = params(os.path.join(models_dir(sr_dir, 'sr'), 'net_g_latest.pth'))
    assert not same(tuned, params(pretrained))  # trained from the checkpoint
    assert sorted(os.listdir(models_dir(sr_dir, 'sr'))) == ['net_g_5.pth', 'net_g_latest.pth']  # synth never saved


@pytest.mark.filterwarnings('ignore:torch.meshgrid')  # basicsr's SwinIR builds its relative positions without indexing
def test_swinir_validates_on_lq_sizes_off_its_window(big_pairs, tmp_path):
    """A real LR is rarely a multiple of SwinIR's window: the test pads and crops as basicsr's SwinIRModel."""
    swinir = {'type': 'SwinIR', 'upscale': 4, 'in_chans': 3, 'img_size': 8, 'window_size': 4, 'img_range': 1.,
              'depths': [1], 'embed_dim': 6, 'num_heads': [1], 'mlp_ratio': 1, 'upsampler': 'pixelshuffle'}
    opt = sr_options(*big_pairs, {'type': 'BicubicSynthesizer', 'scale': 4}, gt_size=32)
    opt['network_g'] = swinir
    model = build_sr_model(tmp_path, opt)
    model.feed_data({'lq': torch.rand(1, 3, 10, 7)})
    model.test()
    assert model.output.shape == (1, 3, 40, 28)


def test_reconstruction_model_trains_on_the_lr_of_its_iteration(pairs, tmp_path):
    """The LR is both input and target; a pair fed for another iteration is re-made from the HR, not the LR."""
    model = build_sr_model(tmp_path, reconstruction_options(pairs[0], total_iter=9, snapshot_epochs=[1]))
    assert model.iters_per_epoch == 3 and isinstance(model.net_synth, BicubicSynthesizer)
    hr = hr_batch(size=16, seed=4)
    model.synth_iter = 7
    model.feed_data({'gt': hr})
    model.optimize_parameters(2)
    lr = BicubicSynthesizer(4)(hr)
    assert torch.equal(model.lq, lr) and torch.equal(model.gt, lr) and model.synth_iter == 3
    assert set(model.get_current_log()) == {'l_mse', 'l_latent'}
    enlarged = reconstruction_options(pairs[0], total_iter=9, snapshot_epochs=[1], batch_size_per_gpu=3,
                                      dataset_enlarge_ratio=2)
    assert build_sr_model(tmp_path, enlarged).iters_per_epoch == 4  # ceil(5 * 2 / 3)
    with_ema = reconstruction_options(pairs[0], total_iter=9, snapshot_epochs=[1])
    with_ema['train']['ema_decay'] = 0.999
    with pytest.raises(ValueError, match='train.ema_decay must be 0'):
        build_sr_model(tmp_path, with_ema)
