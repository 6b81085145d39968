"""DualCodebookVQModel (issue 13, stage I): reconstruction training, the HQ+ codebook learning only from GT above
S_thr, the GAN and its adaptive weight from net_d_start_iter on, the missing-VGG error, and save / load."""
import copy
import os

import pytest
import torch

import gtplus_models  # noqa: F401  (registers every gtplus component)
from gtplus_models import dual_codebook_vq_model
from gtplus_models.dual_codebook_vq_model import adaptive_weight

pytestmark = pytest.mark.usefixtures('one_torch_thread')

# Widths a multiple of 32 (GroupNorm(32)); S_thr 0.5.
TINY_AE = {'type': 'DualCodebookVQAutoEncoder', 'img_size': 32, 'nf': 32, 'ch_mult': [1, 2], 'res_blocks': 1,
           'attn_resolutions': [16], 'codebook_size': 8, 'emb_dim': 8, 'beta': 0.25, 'hq_threshold': 0.5,
           'fuse_weight': 0.8}
TINY_D = {'type': 'GTPlusVQGANDiscriminator', 'nc': 3, 'ndf': 8, 'n_layers': 2}
HINGE = {'type': 'GANLoss', 'gan_type': 'hinge', 'loss_weight': 1.0}


@pytest.fixture(scope='module')
def scored_folder(tmp_path_factory):
    """Three random 32x32 GT PNGs and their `gtplus score` side file (MUSIQ, higher is better)."""
    from data_helpers import make_folder
    from test_scored_blind_dataset import write_scores
    folder, _ = make_folder(str(tmp_path_factory.mktemp('vq_gt') / 'gt'), num=3, height=32, width=32)
    write_scores(folder, {f'{i:03d}': {'musiq': 10. * i} for i in range(3)}, ensemble=False, kind='folder')
    return folder


def vq_options(data_root, name='vq', gan=True, net_d_start_iter=1, path=None, **train):
    """A complete stage-I option dict on ``data_root`` (most tests feed their own batches)."""
    dataset = {'name': 'scored_gt', 'type': 'GTPlusScoredBlindDataset', 'dataroot_gt': data_root,
               'io_backend': {'type': 'disk'}, 'score_name': 'musiq', 'gt_size': 32, 'use_hflip': False,
               'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1}
    opt = {
        'name': name, 'model_type': 'DualCodebookVQModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': dataset},
        'network_g': dict(TINY_AE),
        'path': dict({'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}, **(path or {})),
        'train': dict({'optim_g': {'type': 'Adam', 'lr': 2e-3, 'betas': [0.9, 0.99]}, 'total_iter': 10,
                       'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                       'codebook_loss_weight': 1.0}, **train),
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 10, 'use_tb_logger': False},
    }
    if gan:
        opt['network_d'] = dict(TINY_D)
        opt['train'].update(gan_opt=dict(HINGE), net_d_start_iter=net_d_start_iter,
                            optim_d={'type': 'Adam', 'lr': 2e-3, 'betas': [0.9, 0.99]})
    return opt


def build(tmp_path, opt):
    """The model of ``opt``, as basicsr's training builds it (options parsed and checked by gtplus)."""
    from basicsr.models import build_model
    from conftest import write_yaml

    from gtplus_models.options import parse_options
    path = write_yaml(tmp_path / f'{opt["name"]}.yml', opt)
    parsed = parse_options(str(tmp_path), True, ['-opt', path])[0]
    for key in ('models', 'training_states'):
        os.makedirs(parsed['path'][key], exist_ok=True)
    torch.manual_seed(0)
    return build_model(parsed)


def batch(scores, seed=0):
    """Smooth random GT (a 4x4 pattern upsampled: learnable in a few steps), [B,3,32,32] in [0,1], and scores."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(len(scores), 3, 4, 4, generator=generator)
    gt = torch.nn.functional.interpolate(coarse, size=32, mode='bilinear', align_corners=False)
    return {'gt': gt, 'lq': gt.clone(), 'score': torch.tensor(scores), 'gt_path': ['a.png'] * len(scores)}


def hq_codebook(model):
    return model.net_g.quantize_aesthetic.embedding.weight.detach().clone()


def test_steps_lower_the_reconstruction_loss(tmp_path, scored_folder):
    from basicsr.data import build_dataset
    opt = vq_options(scored_folder, gan=False)
    model = build(tmp_path, opt)
    # One step on a batch of the scored dataset: the keys and shapes it gives are what the model reads.
    dataset = build_dataset(dict(opt['datasets']['train'], phase='train'))
    model.feed_data(next(iter(torch.utils.data.DataLoader(dataset, batch_size=2))))
    assert model.score.shape == (2, ) and model.gt.shape == (2, 3, 32, 32)
    model.optimize_parameters(1)
    data = batch([0.9, 0.2])
    model.feed_data(data)
    losses = []
    for it in range(1, 16):
        model.optimize_parameters(it)
        losses.append(model.log_dict['l_pix'])
    assert {'l_pix', 'l_codebook', 'l_codebook_hq'} <= set(model.log_dict)
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], losses
    model.test()
    assert model.output.shape == data['gt'].shape


@pytest.mark.parametrize('scores, learns', [([0.2, 0.5], False), ([0.3, 0.51], True)])
def test_hq_codebook_learns_only_from_gt_above_the_threshold(tmp_path, scored_folder, scores, learns):
    # GAN on from the first step, so its gradients are covered too.
    model = build(tmp_path, vq_options(scored_folder, net_d_start_iter=1))
    before, common = hq_codebook(model), model.net_g.quantize.embedding.weight.detach().clone()
    model.feed_data(batch(scores))
    model.optimize_parameters(1)
    assert 'l_g_gan' in model.log_dict
    assert not torch.equal(model.net_g.quantize.embedding.weight, common)  # the common codebook always learns
    assert torch.equal(hq_codebook(model), before) != learns
    assert (model.log_dict['l_codebook_hq'] > 0) == learns


def test_gan_and_adaptive_weight_start_at_net_d_start_iter(tmp_path, scored_folder, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return adaptive_weight(*args, **kwargs)

    monkeypatch.setattr(dual_codebook_vq_model, 'adaptive_weight', counting)
    model = build(tmp_path, vq_options(scored_folder, net_d_start_iter=3))
    d_state = copy.deepcopy(model.net_d.state_dict())
    model.feed_data(batch([0.9, 0.2]))
    for it in (1, 2):
        model.optimize_parameters(it)
        assert not {'l_g_gan', 'd_weight', 'l_d_real', 'l_d_fake'} & set(model.log_dict)
    assert not calls
    for key, value in model.net_d.state_dict().items():
        assert torch.equal(value, d_state[key]), key
    model.optimize_parameters(3)
    assert len(calls) == 1
    assert {'l_g_gan', 'd_weight', 'l_d_real', 'l_d_fake'} <= set(model.log_dict)
    assert 0 < model.log_dict['d_weight'] <= 0.8 + 1e-6  # disc_weight 0.8 times a weight clamped to [0, 1]
    assert not torch.equal(model.net_d.state_dict()['main.0.weight'], d_state['main.0.weight'])


def test_adaptive_weight_matches_a_hand_computation():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    recon = (w * torch.tensor([3.0, 4.0])).sum()  # d/dw = (3, 4): norm 5
    gan = (w * torch.tensor([6.0, 8.0])).sum()  # norm 10
    weight = adaptive_weight(recon, gan, w)
    assert torch.isclose(weight, torch.tensor(5.0 / (10.0 + 1e-4)))
    assert not weight.requires_grad
    small = (w * torch.tensor([0.3, 0.4])).sum()  # norm 0.5: 5 / 0.5 = 10, clamped to the maximum
    assert adaptive_weight(recon, small, w).item() == 1.0
    assert adaptive_weight(recon, small, w, max_weight=20.0).item() == pytest.approx(5.0 / (0.5 + 1e-4))


def test_missing_perceptual_weights_is_a_one_line_error_naming_the_file(tmp_path, scored_folder, monkeypatch):
    from basicsr.archs import vgg_arch
    missing = tmp_path / 'nowhere' / 'vgg19-dcbb9e9d.pth'
    monkeypatch.setattr(vgg_arch, 'VGG_PRETRAIN_PATH', str(missing))
    perceptual = {'type': 'PerceptualLoss', 'layer_weights': {'conv5_4': 1.0}, 'perceptual_weight': 1.0,
                  'style_weight': 0.0}
    opt = vq_options(scored_folder, gan=False, perceptual_opt=perceptual)
    with pytest.raises(FileNotFoundError) as info:
        build(tmp_path, opt)
    assert str(missing) in str(info.value) and '\n' not in str(info.value)


def test_save_and_load_round_trip(tmp_path, scored_folder):
    model = build(tmp_path, vq_options(scored_folder, name='vq_save'))
    model.feed_data(batch([0.9, 0.7]))
    model.optimize_parameters(1)
    model.save(0, 1)
    models_dir = model.opt['path']['models']
    g_path, d_path = os.path.join(models_dir, 'net_g_1.pth'), os.path.join(models_dir, 'net_d_1.pth')
    assert os.path.isfile(os.path.join(model.opt['path']['training_states'], '1.state'))
    loaded = build(tmp_path, vq_options(scored_folder, name='vq_load', path={'pretrain_network_g': g_path,
                                                              'pretrain_network_d': d_path}))
    for source, target in ((model.net_g, loaded.net_g), (model.net_d, loaded.net_d)):
        expected = source.state_dict()
        for key, value in target.state_dict().items():
            assert torch.equal(value, expected[key]), key
    loaded.feed_data(batch([0.9, 0.7]))
    model.test()
    loaded.test()
    assert torch.equal(model.output, loaded.output)


def test_ema_and_validation_on_the_scored_dataset(tmp_path, scored_folder):
    from basicsr.data import build_dataset
    opt = vq_options(scored_folder, name='vq_ema', gan=False, ema_decay=0.9)
    opt['val'] = {'val_freq': 1, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    model = build(tmp_path, opt)
    model.feed_data(batch([0.9, 0.7]))
    model.optimize_parameters(1)
    ema = model.net_g_ema.state_dict()
    moved = [key for key, value in model.net_g.state_dict().items() if not torch.equal(value, ema[key])]
    assert moved  # the EMA lags net_g
    model.save(0, 1)
    saved = torch.load(os.path.join(model.opt['path']['models'], 'net_g_1.pth'), map_location='cpu')
    assert set(saved) == {'params', 'params_ema'}
    val_set = build_dataset(dict(opt['datasets']['train'], name='scored_val', phase='val'))
    model.validation(torch.utils.data.DataLoader(val_set, batch_size=1), 1, None, False)
    assert 0 < model.metric_results['psnr'] < 100
