"""LQDiffusionModel (issue 12): the epsilon-MSE DDPM over low timesteps, EMA, exact resume, the diffusers export, the
option checks, and the tiny end-to-end chain DDPM -> export -> gtplus synthesize -> SynthesizedSRModel."""
import copy
import os

import pytest
import torch

import gtplus_models  # noqa: F401  (registers every gtplus component)
from gtplus_arch.lq_diffusion_arch import LQDiffusionUNet, sample_timesteps
from gtplus_models.synthesized_sr_model import TRAIN_STREAM, pair_seed

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY_UNET = {'sample_size': 16, 'block_out_channels': [8, 16], 'layers_per_block': 1, 'norm_num_groups': 4,
             'down_block_types': ['DownBlock2D', 'AttnDownBlock2D'], 'up_block_types': ['AttnUpBlock2D', 'UpBlock2D']}
SCHEDULER = {'type': 'DDPMScheduler', 'num_train_timesteps': 1000, 'beta_schedule': 'linear',
             'prediction_type': 'epsilon'}
BATCH, DECAY, NAME = 2, 0.9, 'lqddpm'


@pytest.fixture(scope='module')
def lq_lmdbs(tmp_path_factory):
    """(train, val) LMDBs of random 'real LQ' images: 6 of 24^2 (16^2 crops) and 2 of 48^2 (room for the
    StableSR first stage of the validation strips, whose smallest HR side is 44)."""
    from data_helpers import noise_lmdb
    root = tmp_path_factory.mktemp('lq_diffusion_data')
    return noise_lmdb(root / 'lq_train.lmdb', num=6, size=24), noise_lmdb(root / 'lq_val.lmdb', num=2, size=48)


def ddpm_options(lmdbs, total_iter=6, save_freq=3, val_freq=100, name=NAME, **train):
    train_lmdb, val_lmdb = lmdbs
    lq = {'type': 'GTPlusSingleHRDataset', 'io_backend': {'type': 'lmdb'}}
    return {
        'name': name, 'model_type': 'LQDiffusionModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': dict(lq, name='lq_train', dataroot_gt=train_lmdb, gt_size=16, use_hflip=True,
                                   use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=BATCH,
                                   dataset_enlarge_ratio=1),
                     'val': dict(lq, name='lq_val', dataroot_gt=val_lmdb)},
        'network_g': dict(TINY_UNET, type='LQDiffusionUNet'), 'noise_scheduler': dict(SCHEDULER),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': dict({'max_timestep': 50, 'ema_decay': DECAY, 'optim_g': {'type': 'AdamW', 'lr': 1e-3},
                       'total_iter': total_iter, 'warmup_iter': -1}, **train),
        'val': {'val_freq': val_freq, 'save_img': False, 'steps': 4, 'strengths': [0.1, 0.25]},
        'logger': {'print_freq': 3, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
    }


def build(tmp_path, opt):
    """The model of ``opt``, as basicsr's training builds it (options parsed and checked by gtplus)."""
    from basicsr.models import build_model
    from conftest import write_yaml

    from gtplus_models.options import parse_options
    path = write_yaml(tmp_path / f'{opt["name"]}.yml', opt)
    parsed = parse_options(str(tmp_path), True, ['-opt', path])[0]
    for key in ('models', 'training_states', 'visualization'):
        os.makedirs(parsed['path'][key], exist_ok=True)
    torch.manual_seed(0)
    return build_model(parsed)


def lq_batch(seed=0, size=16):
    return torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(seed))


def run(run_dir, opt, resume=False):
    """Train ``opt`` in ``run_dir`` through gtplus's train entry, in this process; returns basicsr's log lines."""
    from test_synth_models import run as run_training
    return run_training(str(run_dir), opt, resume)  # basicsr_messages collects at INFO


def models_dir(run_dir, name=NAME):
    return os.path.join(str(run_dir), 'experiments', name, 'models')


def checkpoint(run_dir, label, name=NAME):
    return torch.load(os.path.join(models_dir(run_dir, name), f'net_g_{label}.pth'), weights_only=True)


def same(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ------------------------------------------------------------------------------------------------------------ #
# One model in process
# ------------------------------------------------------------------------------------------------------------ #


def test_timesteps_never_reach_max_timestep(lq_lmdbs, tmp_path):
    model = build(tmp_path, ddpm_options(lq_lmdbs, max_timestep=7))
    seen = []
    model.net_g.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    for iteration in range(1, 61):
        model.feed_data({'gt': lq_batch(iteration)})
        model.optimize_parameters(iteration)
    seen = torch.cat(seen)
    assert seen.dtype == torch.int64 and seen.numel() == 60 * BATCH
    assert seen.min() == 0 and seen.max() == 6  # 120 draws cover 0..6, and never 7 or more
    assert set(seen.tolist()) == set(range(7))


def test_loss_is_the_epsilon_mse_and_ema_follows_the_formula(lq_lmdbs, tmp_path):
    model = build(tmp_path, ddpm_options(lq_lmdbs))
    gt = lq_batch(3)
    before = copy.deepcopy(model.net_g)
    ema_before = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    assert same(ema_before, before.state_dict())  # the EMA starts as a copy of net_g
    iteration = 5
    model.feed_data({'gt': gt})
    model.optimize_parameters(iteration)

    # By hand: the generator of iteration 5, t then noise, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise on [-1,1].
    generator = torch.Generator().manual_seed(pair_seed(0, 0, TRAIN_STREAM, iteration))
    t = sample_timesteps(BATCH, 50, generator=generator)
    noise = torch.randn(gt.shape, generator=generator)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)  # diffusers' linear schedule
    abar = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1)
    x0 = 2 * gt - 1
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        expected = ((before(x_t, t) - noise) ** 2).mean().item()
    assert model.get_current_log()['l_mse'] == pytest.approx(expected, rel=1e-5)

    trained = model.net_g.state_dict()
    assert not same(trained, before.state_dict())
    for key, ema in model.net_g_ema.state_dict().items():  # ema = d * ema + (1 - d) * w after the step
        assert torch.allclose(ema, DECAY * ema_before[key] + (1 - DECAY) * trained[key], atol=1e-7, rtol=0), key
    moved = [k for k in trained if not torch.equal(trained[k], ema_before[k])]
    assert moved and all(not torch.equal(model.net_g_ema.state_dict()[k], trained[k]) for k in moved)


def test_the_same_iteration_draws_the_same_noise_and_bf16_runs_on_the_cpu(lq_lmdbs, tmp_path):
    model = build(tmp_path, ddpm_options(lq_lmdbs))
    x0 = lq_batch(1) * 2 - 1
    t1, n1 = model.draw(x0, 4)
    t2, n2 = model.draw(x0, 4)
    assert torch.equal(t1, t2) and torch.equal(n1, n2) and not torch.equal(n1, model.draw(x0, 5)[1])
    bf16 = build(tmp_path, ddpm_options(lq_lmdbs, name='bf16', mixed_precision='bf16'))
    bf16.feed_data({'gt': lq_batch(2)})
    bf16.optimize_parameters(1)
    assert bf16.grad_scaler is None and torch.isfinite(torch.tensor(bf16.get_current_log()['l_mse']))
    assert next(bf16.net_g.parameters()).dtype == torch.float32


@pytest.mark.parametrize('train, key', [
    ({'max_timestep': 0}, 'train.max_timestep'),
    ({'max_timestep': 1001}, 'train.max_timestep'),
    ({'max_timestep': 2.5}, 'train.max_timestep'),
    ({'mixed_precision': 'fp16'}, 'train.mixed_precision'),
    ({'mixed_precision': 'fp32'}, 'train.mixed_precision'),
    ({'ema_decay': 1.5}, 'train.ema_decay'),
], ids=['max_timestep 0', 'max_timestep > T', 'max_timestep float', 'fp16 on cpu', 'fp32', 'ema 1.5'])
def test_a_bad_option_is_one_line_naming_its_key(lq_lmdbs, tmp_path, train, key):
    from gtplus_models.options import OptionsError
    with pytest.raises(OptionsError) as err:
        build(tmp_path, ddpm_options(lq_lmdbs, **train))
    assert str(err.value).startswith(key) and '\n' not in str(err.value)


def test_a_bad_option_stops_gtplus_train_with_one_line(lq_lmdbs, tmp_path, capsys):
    from conftest import console_to_current_stderr, write_yaml

    from gtplus_models.train import train_main
    console_to_current_stderr()  # an earlier test's basicsr console handler may still hold its closed capture
    path = write_yaml(tmp_path / 'bad.yml', ddpm_options(lq_lmdbs, max_timestep=2000))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert train_main(['-opt', path]) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip()
    # basicsr's log (banner, networks) may precede it on the console; the error is the one last line, no traceback
    assert err.splitlines()[-1].startswith('gtplus train: error: train.max_timestep must be an integer in [1, 1000], '
                                           'got 2000')
    assert 'Traceback' not in err


# ------------------------------------------------------------------------------------------------------------ #
# Through gtplus's train entry: export, validation, exact resume
# ------------------------------------------------------------------------------------------------------------ #


@pytest.fixture(scope='module')
def uninterrupted(lq_lmdbs, tmp_path_factory):
    """6 iterations, checkpoints at 3 and 6 (each also exported), validation at 6."""
    run_dir = tmp_path_factory.mktemp('lqddpm_run')
    messages = run(run_dir, ddpm_options(lq_lmdbs, val_freq=6, export_every_checkpoint=True))
    return run_dir, messages


def test_training_logs_validates_and_exports(uninterrupted):
    run_dir, messages = uninterrupted
    text = '\n'.join(messages)
    assert 'l_mse: ' in text and 'Validation lq_val' in text and '# l_mse_val: ' in text
    models = models_dir(run_dir)
    assert sorted(os.listdir(models)) == ['diffusers_3', 'diffusers_6', 'diffusers_latest', 'net_g_3.pth',
                                          'net_g_6.pth', 'net_g_latest.pth']
    for label in ('3', '6', 'latest'):
        assert sorted(os.listdir(os.path.join(models, f'diffusers_{label}'))) == ['model_index.json', 'scheduler',
                                                                                  'unet']
    strips = os.path.join(str(run_dir), 'experiments', NAME, 'visualization')
    # basicsr validates at val_freq and once more after the loop (its counter then reads total_iter + 1).
    assert sorted(os.listdir(strips)) == ['k0', 'k1']
    assert sorted(os.listdir(os.path.join(strips, 'k0'))) == ['k0_6.png', 'k0_7.png']
    import cv2
    strip = cv2.imread(os.path.join(strips, 'k0', 'k0_6.png'))
    assert strip.shape[0] == 22 + 128 and strip.shape[1] > 4 * 128  # 4 panels: initial, 2 refined, real LQ


def test_the_export_loads_in_diffusers_and_gtplus_as_the_ema_net(uninterrupted):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    run_dir, _ = uninterrupted
    folder = os.path.join(models_dir(run_dir), 'diffusers_latest')
    saved = checkpoint(run_dir, 'latest')
    assert not same(saved['params'], saved['params_ema'])
    ema = LQDiffusionUNet(**TINY_UNET)
    ema.load_state_dict(saved['params_ema'])
    loaders = {'UNet2DModel': UNet2DModel.from_pretrained(os.path.join(folder, 'unet'), local_files_only=True),
               'LQDiffusionUNet (pipeline folder)': LQDiffusionUNet(pretrained_path=folder).unet,
               'LQDiffusionUNet (unet folder)': LQDiffusionUNet(pretrained_path=os.path.join(folder, 'unet')).unet,
               'DDPMPipeline': DDPMPipeline.from_pretrained(folder, local_files_only=True).unet}
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 40])
    with torch.no_grad():
        expected = ema.eval()(x, t)
        for name, unet in loaders.items():
            assert torch.equal(unet.eval()(x, t).sample, expected), name
    scheduler = DDPMScheduler.from_pretrained(os.path.join(folder, 'scheduler'), local_files_only=True)
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.beta_schedule == 'linear'
    # diffusers_6 is the checkpoint of iteration 6, whose EMA is the final one.
    six = LQDiffusionUNet(pretrained_path=os.path.join(models_dir(run_dir), 'diffusers_6')).unet.eval()
    with torch.no_grad():
        assert torch.equal(six(x, t).sample, expected)


def test_resume_continues_at_the_saved_iteration_as_the_uninterrupted_run(uninterrupted, lq_lmdbs, tmp_path):
    run_dir = tmp_path / 'resumed'
    run(run_dir, ddpm_options(lq_lmdbs, total_iter=3, val_freq=6, export_every_checkpoint=True))
    at_cut = checkpoint(run_dir, 3)
    assert not same(at_cut['params'], at_cut['params_ema'])
    messages = run(run_dir, ddpm_options(lq_lmdbs, val_freq=6, export_every_checkpoint=True), resume=True)
    assert any('Resuming training from epoch' in m and 'iter: 3' in m for m in messages)
    reference = checkpoint(uninterrupted[0], 6)
    resumed = checkpoint(run_dir, 6)
    assert same(resumed['params'], reference['params'])  # bit for bit, net_g and its EMA
    assert same(resumed['params_ema'], reference['params_ema'])
    from safetensors.torch import load_file
    exported = [load_file(os.path.join(models_dir(r), 'diffusers_6', 'unet', 'diffusion_pytorch_model.safetensors'))
                for r in (run_dir, uninterrupted[0])]
    assert same(*exported)


def test_resume_restores_the_ema_weights_intact(uninterrupted, lq_lmdbs, tmp_path):
    """A model resumed from iteration 3 holds that checkpoint's params and params_ema, not a fresh EMA copy."""
    opt = ddpm_options(lq_lmdbs)
    opt['path']['pretrain_network_g'] = os.path.join(models_dir(uninterrupted[0]), 'net_g_3.pth')
    model = build(tmp_path, opt)
    saved = checkpoint(uninterrupted[0], 3)
    assert same(model.net_g.state_dict(), saved['params'])
    assert same(model.net_g_ema.state_dict(), saved['params_ema'])


# ------------------------------------------------------------------------------------------------------------ #
# Tiny end-to-end: DDPM -> export -> gtplus synthesize -> SynthesizedSRModel
# ------------------------------------------------------------------------------------------------------------ #


def test_end_to_end_ddpm_export_synthesize_then_sr_fine_tuning(uninterrupted, lq_lmdbs, tmp_path):
    from data_helpers import noise_lmdb
    from test_synth_models import TINY_EDSR, sr_options

    from gtplus_models.tools.synthesize import synthesize
    export = os.path.join(models_dir(uninterrupted[0]), 'diffusers_latest')
    block = {'type': 'DiffusionRefinedSynthesizer', 'scale': 4, 'unet': {'pretrained_path': export}, 'steps': 4}
    hr = noise_lmdb(tmp_path / 'hr.lmdb', num=3, size=48)
    written = synthesize(hr, str(tmp_path / 'pairs'), copy.deepcopy(block), seed=0, preview=0)
    lq_lmdb, gt_lmdb = str(tmp_path / 'pairs_lq.lmdb'), str(tmp_path / 'pairs_gt.lmdb')
    assert written[:2] == [lq_lmdb, gt_lmdb]
    with open(os.path.join(lq_lmdb, 'meta_info.txt')) as f:
        assert [line.split()[1] for line in f.read().splitlines()] == ['(12,12,3)'] * 3

    # The same block online: SynthesizedSRModel fine-tunes a tiny EDSR, validated on the synthesized pair.
    opt = sr_options(None, None, copy.deepcopy(block), total_iter=2, name='sr_diffusion', gt_size=48)
    opt['datasets']['train'].update(dataroot_gt=hr, io_backend={'type': 'lmdb'})
    opt['datasets']['val'].update(dataroot_gt=gt_lmdb, dataroot_lq=lq_lmdb, io_backend={'type': 'lmdb'})
    opt['network_g'] = dict(TINY_EDSR)
    messages = run(tmp_path / 'sr', opt)
    text = '\n'.join(messages)
    assert 'network_synth [DiffusionRefinedSynthesizer] loaded' in text and '# psnr: ' in text
    assert sorted(os.listdir(models_dir(tmp_path / 'sr', 'sr_diffusion'))) == ['net_g_2.pth', 'net_g_latest.pth']
