"""The model defaults reproduce the official enhanced-supervision losses, which the released code takes on [-1,1]
tensors (gtplus works on [0,1]); GTPlusConcatDataset for the joint SIDD + GoPro training."""
import copy
import os

import cv2
import numpy as np
import pytest
import torch

from conftest import make_paired_pngs, run_cli, write_yaml

TINY_CFMG = {'type': 'CFMG', 'num_sources': 4, 'width': 4, 'num_levels': 2, 'hidden': 8, 'dropout': 0.0}
TINY_ORNET = {'type': 'ORNet', 'width': 4, 'enc_blk_nums': [1, 1], 'middle_blk_num': 1, 'dec_blk_nums': [1, 1]}


def photo_batch(size, names=('astronaut', 'coffee', 'chelsea')):
    """Centre crops of scikit-image photos: gt Tensor[B,3,size,size] and variants Tensor[B,3,3,size,size], RGB
    [0,1]; the variants are unsharp-masked copies of increasing strength (stand-ins for SR variants)."""
    import skimage.data
    gts = []
    for name in names:
        img = getattr(skimage.data, name)()
        top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        gts.append(img[top:top + size, left:left + size].astype(np.float32) / 255.)
    variants = [[np.clip(g + 0.5 * k * (g - cv2.GaussianBlur(g, (0, 0), 1.0)), 0, 1) for k in (1, 2, 3)]
                for g in gts]
    to_t = lambda img: torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # noqa: E731
    return {'gt': torch.stack([to_t(g) for g in gts]),
            'variants': torch.stack([torch.stack([to_t(v) for v in vs]) for vs in variants])}


def model_options(tmp_path, model_type, network, **train):
    return {'name': 'scales', 'model_type': model_type, 'num_gpu': 0, 'is_train': True, 'dist': False, 'rank': 0,
            'world_size': 1, 'network_g': dict(network),
            'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
                     'training_states': str(tmp_path)},
            'train': dict({'optim_g': {'type': 'AdamW', 'lr': 1e-3},
                           'scheduler': {'type': 'MultiStepLR', 'milestones': [100]}}, **train)}


def official_mixup(sources_pm, masks):
    """The released mixup on [-1,1] sources: Re(ifft2(ifftshift(Σ_i M_i ⊙ fftshift(fft2(I_i, ortho))))), written
    out here independently of gtplus_arch.frequency_mixup. sources_pm [B,S,3,H,W], masks [B,S,H,W] (centred)."""
    spectra = torch.fft.fftshift(torch.fft.fft2(sources_pm.double(), norm='ortho'), dim=(-2, -1))
    mixed = (spectra * masks.double().unsqueeze(2)).sum(dim=1)
    return torch.fft.ifft2(torch.fft.ifftshift(mixed, dim=(-2, -1)), norm='ortho').real


def force_cond(monkeypatch, module, value):
    """Replace ``module.draw_condition`` by one that returns ``value`` for every sample (and records the call)."""
    calls = []

    def draw(batch, device, per_sample, generator=None):
        calls.append(per_sample)
        return torch.full((batch, ), value, device=device)

    monkeypatch.setattr(module, 'draw_condition', draw)
    return calls


def test_cfmg_default_objective_is_the_official_one_on_minus_one_one_tensors(tmp_path, monkeypatch):
    """(1-c²)·mean((2Î-1 - (2GT-1))²) - c²·reward at c = 0.5, with the default fidelity (no fidelity_opt)."""
    from basicsr.models import build_model

    import gtplus_models.cfmg_model as cfmg_model
    from gtplus_models.quality import create_quality_metric
    torch.manual_seed(0)
    model = build_model(model_options(tmp_path, 'CFMGModel', TINY_CFMG,
                                      quality_opt={'metrics': [{'name': 'niqe', 'weight': 0.1}]}))
    assert model.cri_fidelity.loss_weight == 4.0
    data = photo_batch(96, names=('astronaut', 'coffee'))
    cond = 0.5
    calls = force_cond(monkeypatch, cfmg_model, cond)
    model.feed_data(data)

    # The official side, before the step changes the weights: masks from the CFMG (dropout 0), everything else by
    # hand on [-1,1] tensors.
    gt, variants = data['gt'], data['variants']
    with torch.no_grad():
        masks = model.net_g.predict_masks(gt, torch.full((2, ), cond))
    sources_pm = torch.cat([gt.unsqueeze(1), variants], dim=1) * 2 - 1
    enhanced_pm = official_mixup(sources_pm, masks)
    mse_pm = ((enhanced_pm - (gt.double() * 2 - 1))**2).mean().item()
    # Reward: as gtplus feeds pyiqa (not the released [-1,1] bug), on the [0,1] image of the same mixup.
    niqe = create_quality_metric('niqe', as_loss=True)
    with torch.no_grad():
        reward = -0.1 * niqe(((enhanced_pm + 1) / 2).clamp(0, 1).float()).mean().item()
    official = (1 - cond**2) * mse_pm - cond**2 * reward

    model.optimize_parameters(1)
    logged = model.get_current_log()
    assert calls == [False] and logged['cond'] == cond
    assert logged['l_fidelity'] == pytest.approx(mse_pm, rel=1e-4)  # 4x the [0,1] MSE
    assert logged['l_quality_reward'] == pytest.approx(reward, rel=1e-4)
    assert logged['l_total'] == pytest.approx(official, rel=1e-4)
    # The tolerance would catch the old default (MSE on [0,1], weight 1) by a wide margin.
    old = (1 - cond**2) * mse_pm / 4 - cond**2 * reward
    assert abs(old - official) > 10 * 1e-4 * abs(official)


@pytest.fixture(scope='module')
def frozen_cfmg(tmp_path_factory):
    from basicsr.archs import build_network
    torch.manual_seed(1)
    path = str(tmp_path_factory.mktemp('cfmg') / 'cfmg.pth')
    torch.save({'params': build_network(dict(TINY_CFMG)).state_dict()}, path)
    return path


def build_ornet(tmp_path, frozen_cfmg, **train):
    from basicsr.models import build_model
    torch.manual_seed(2)
    opt = model_options(tmp_path, 'ORNetModel', TINY_ORNET, **train)
    opt.update(ornet_input='gt', network_cfmg=dict(TINY_CFMG))
    opt['path']['pretrain_network_cfmg'] = frozen_cfmg
    model = build_model(opt)
    with torch.no_grad():
        # Push the tiny ORNet's output well outside [0,1], so that clamping the output visibly matters.
        model.net_g.ending.weight.mul_(200)
    return model


def ornet_step(model, monkeypatch, data):
    """One training step; returns the logged l_pix, the step's c [B] and ORNet's pre-step output at that c."""
    import gtplus_models.ornet_model as ornet_model
    drawn = {}
    real_draw = ornet_model.draw_condition

    def draw(batch, device, per_sample, generator=None):
        drawn['per_sample'] = per_sample
        drawn['cond'] = real_draw(batch, device, per_sample, generator)
        return drawn['cond']

    monkeypatch.setattr(ornet_model, 'draw_condition', draw)
    before = copy.deepcopy(model.net_g).eval()
    model.feed_data(data)
    model.optimize_parameters(1)
    with torch.no_grad():
        output = before(data['gt'], drawn['cond'])
        sources = torch.cat([data['gt'].unsqueeze(1), data['variants']], dim=1)
        target = model.net_cfmg(data['gt'], sources, drawn['cond'])[0].clamp(0, 1)
    return model.get_current_log()['l_pix'], drawn, output, target


def test_ornet_default_is_twice_the_l1_of_the_clamped_output_with_one_c_per_step(tmp_path, frozen_cfmg, monkeypatch):
    torch.manual_seed(3)
    model = build_ornet(tmp_path, frozen_cfmg)  # no pixel_opt, cond_per_sample or clamp_output: the defaults
    assert model.cri_pix.loss_weight == 2.0 and model.clamp_output and not model.cond_per_sample
    l_pix, drawn, output, target = ornet_step(model, monkeypatch, photo_batch(32))
    assert drawn['per_sample'] is False
    assert torch.all(drawn['cond'] == drawn['cond'][0])  # every sample shares the step's c
    outside = ((output < 0) | (output > 1)).float().mean().item()
    assert outside > 0.2  # the clamp is exercised
    expected = 2 * (output.clamp(0, 1) - target).abs().mean().item()
    official = ((output.clamp(0, 1) * 2 - 1) - (target * 2 - 1)).abs().mean().item()  # L1 on [-1,1]
    assert expected == pytest.approx(official, rel=1e-6)
    assert l_pix == pytest.approx(official, rel=1e-5)
    unclamped = 2 * (output - target).abs().mean().item()
    assert abs(unclamped - l_pix) > 0.1 * l_pix


def test_ornet_per_sample_c_and_unclamped_output_are_options(tmp_path, frozen_cfmg, monkeypatch):
    torch.manual_seed(3)
    model = build_ornet(tmp_path, frozen_cfmg, cond_per_sample=True, clamp_output=False,
                        pixel_opt={'type': 'L1Loss', 'loss_weight': 1.0})  # the quickstart's settings
    l_pix, drawn, output, target = ornet_step(model, monkeypatch, photo_batch(32))
    assert drawn['per_sample'] is True and len(set(drawn['cond'].tolist())) == 3
    assert ((output < 0) | (output > 1)).float().mean().item() > 0.2
    assert l_pix == pytest.approx((output - target).abs().mean().item(), rel=1e-5)
    assert abs(l_pix - (output.clamp(0, 1) - target).abs().mean().item()) > 0.1 * l_pix


def test_ornet_fixed_cond_trains_at_that_c_only(tmp_path, frozen_cfmg, monkeypatch):
    """train.fixed_cond (the c = 0 control of the benchmark): no c is drawn, the target is the CFMG at that c."""
    import gtplus_models.ornet_model as ornet_model
    monkeypatch.setattr(ornet_model, 'draw_condition', lambda *a, **k: pytest.fail('c must not be drawn'))
    data = photo_batch(32)
    losses = {}
    for value in (0, 0.8):
        model = build_ornet(tmp_path, frozen_cfmg, fixed_cond=value, clamp_output=False,
                            pixel_opt={'type': 'L1Loss', 'loss_weight': 1.0})
        before = copy.deepcopy(model.net_g).eval()
        model.feed_data(data)
        model.optimize_parameters(1)
        cond = torch.full((3, ), float(value))
        with torch.no_grad():
            sources = torch.cat([data['gt'].unsqueeze(1), data['variants']], dim=1)
            target = model.net_cfmg(data['gt'], sources, cond)[0].clamp(0, 1)
            expected = (before(data['gt'], cond) - target).abs().mean().item()
        losses[value] = model.get_current_log()['l_pix']
        assert losses[value] == pytest.approx(expected, rel=1e-5)
    assert losses[0] != pytest.approx(losses[0.8], rel=1e-3)  # the fixed c reaches both ORNet and the target


@pytest.mark.parametrize('value', [1.5, -0.1, '0', True])
def test_ornet_fixed_cond_must_be_a_number_in_unit_range(tmp_path, frozen_cfmg, value):
    with pytest.raises(ValueError, match='train.fixed_cond must be a number in'):
        build_ornet(tmp_path, frozen_cfmg, fixed_cond=value)


def test_ornet_flags_must_be_booleans(tmp_path, frozen_cfmg):
    with pytest.raises(ValueError, match='train.clamp_output must be true or false'):
        build_ornet(tmp_path, frozen_cfmg, clamp_output='false')


def test_validation_c_defaults_to_the_official_value(tmp_path, frozen_cfmg):
    from gtplus_models.enhanced_supervision import DEFAULT_COND
    assert DEFAULT_COND == 0.3
    model = build_ornet(tmp_path, frozen_cfmg)  # no val section
    data = photo_batch(32)
    model.feed_data({'gt': data['gt']})
    model.test()
    with torch.no_grad():
        at_default = model.net_g(data['gt'], torch.full((3, ), 0.3)).clamp(0, 1)
        at_other = model.net_g(data['gt'], torch.full((3, ), 0.6)).clamp(0, 1)
    assert torch.equal(model.output, at_default) and not torch.equal(model.output, at_other)


def test_released_cfmg_file_without_its_fftshift_is_flagged():
    from gtplus_models.enhanced_supervision import official_cfmg_shift_warning
    cfmg = dict(TINY_CFMG)
    assert 'official_fftshift: true' in official_cfmg_shift_warning(cfmg, 'pretrained/CFMG.pkl', 'path.x')
    assert official_cfmg_shift_warning(dict(cfmg, official_fftshift=True), 'pretrained/CFMG.pkl', 'path.x') is None
    assert official_cfmg_shift_warning(cfmg, 'experiments/CFMG/models/net_g_latest.pth', 'path.x') is None


# GTPlusConcatDataset


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """Two paired PNG folders (2 and 3 images, 32² GT, x4 LQ) with different pixels."""
    root = tmp_path_factory.mktemp('concat')
    first = make_paired_pngs(str(root / 'a'), num=2, seed=0)
    second = make_paired_pngs(str(root / 'b'), num=3, seed=1)
    return {'a_gt': first[0], 'a_lq': first[1], 'b_gt': second[0], 'b_lq': second[1], 'root': str(root)}


def variants_entry(gt_dir, **extra):
    return dict({'type': 'GTPlusPairedVariantsDataset', 'dataroot_gt': gt_dir, 'io_backend': {'type': 'disk'}},
                **extra)


def concat(entries, **parent):
    from gtplus_data.concat_dataset import GTPlusConcatDataset
    return GTPlusConcatDataset(dict({'name': 'joint', 'phase': 'val', 'datasets': entries}, **parent))


def test_concat_length_and_routing_with_repeats(folders):
    dataset = concat([variants_entry(folders['a_gt']), variants_entry(folders['b_gt'], repeat=2)])
    assert len(dataset) == 2 * 1 + 3 * 2
    names = [os.path.relpath(dataset[i]['gt_path'], folders['root']) for i in range(len(dataset))]
    a, b = [os.path.join('a', 'GT', f'{i:04d}.png') for i in range(2)], [os.path.join('b', 'GT', f'{i:04d}.png')
                                                                         for i in range(3)]
    assert names == a + b + b
    assert torch.equal(dataset[-1]['gt'], dataset[4]['gt'])  # negative indices, like any sequence
    assert dataset.datasets[1].opt['name'] == 'joint[1]' and 'repeat' not in dataset.datasets[1].opt
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_concat_passes_phase_and_scale_down(folders):
    """A basicsr PairedImageDataset inside: the parent's train phase crops, the parent's scale pairs the LQ."""
    paired = {'type': 'PairedImageDataset', 'dataroot_gt': folders['b_gt'], 'dataroot_lq': folders['b_lq'],
              'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}, 'gt_size': 16, 'use_hflip': False,
              'use_rot': False}
    dataset = concat([paired, variants_entry(folders['a_gt'], gt_size=16)], phase='train', scale=4)
    assert len(dataset) == 5
    first, last = dataset[0], dataset[4]
    assert first['gt'].shape == (3, 16, 16) and first['lq'].shape == (3, 4, 4)
    assert last['gt'].shape == (3, 16, 16) and 'lq' not in last
    assert dataset.datasets[0].opt['phase'] == 'train' and dataset.datasets[0].opt['scale'] == 4


@pytest.mark.parametrize('entries, message', [
    (None, 'non-empty list'),
    ([], 'non-empty list'),
    (['GT'], 'datasets[0] must be a dataset option mapping'),
    ([{'dataroot_gt': 'x'}], 'datasets[0] has no type'),
    ([{'type': 'GTPlusPairedVariantsDatset'}], "datasets[0].type: 'GTPlusPairedVariantsDatset'"),
    ('two', 'non-empty list'),
])
def test_concat_bad_entries_name_the_index(entries, message):
    with pytest.raises(ValueError) as err:
        concat(entries)
    assert message in str(err.value)


@pytest.mark.parametrize('repeat', [0, 1.5, True, '2'])
def test_concat_repeat_must_be_a_positive_integer(folders, repeat):
    with pytest.raises(ValueError, match=r'datasets\[1\]\.repeat must be an integer >= 1'):
        concat([variants_entry(folders['a_gt']), variants_entry(folders['b_gt'], repeat=repeat)])


def test_concat_entry_that_fails_to_build_is_named(folders):
    with pytest.raises(ValueError, match=r'datasets\[1\] \(GTPlusPairedVariantsDataset\) could not be built') as err:
        concat([variants_entry(folders['a_gt']), variants_entry(os.path.join(folders['root'], 'nowhere'))])
    assert err.value.__cause__ is not None  # the entry's own error stays attached


def test_cfmg_trains_on_a_concat_dataset_through_the_cli(folders, tmp_path):
    """gtplus train with a GTPlusConcatDataset: the option checks walk it and basicsr's loop runs on it."""
    entries = [variants_entry(folders[f'{x}_gt'], dataroot_variants=[folders[f'{x}_gt']] * 3, gt_size=32,
                              use_hflip=True, use_rot=False) for x in 'ab']
    entries[1]['repeat'] = 3
    opt = {'name': 'concat_cfmg', 'model_type': 'CFMGModel', 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'train': {'name': 'joint', 'type': 'GTPlusConcatDataset', 'datasets': entries,
                                  'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1}},
           'network_g': TINY_CFMG, 'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
           'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3}, 'total_iter': 2, 'warmup_iter': -1,
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [100]}},
           'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False}}
    run_cli(['train', '-opt', write_yaml(tmp_path / 'concat.yml', opt)], cwd=tmp_path)
    log = open(next((tmp_path / 'experiments' / 'concat_cfmg').glob('train_*.log'))).read()
    assert 'Number of train images: 11' in log and 'l_fidelity' in log  # 2 + 3 x 3
