"""The option files shipped in options/ are valid: known keys and types, registered names, buildable networks.

Paper-scale files point at datasets and weights that are not here, so paths are not checked; everything else a
user would trip over first (a misspelt type, a wrong constructor key, a bad scheduler, an unknown IQA metric) is.
"""
import copy
import glob
import os

import pytest

from conftest import REPO

# synth_*.yml hold only a network_synth block (for `gtplus synthesize --synth-opt`), not a training option file.
SYNTH_ONLY = sorted(glob.glob(os.path.join(REPO, 'options', 'train', '*', 'synth_*.yml')))
SHIPPED = sorted(p for p in glob.glob(os.path.join(REPO, 'options', 'train', '*', '*.yml')) +
                 glob.glob(os.path.join(REPO, 'options', 'test', '*', '*.yml')) if p not in SYNTH_ONLY)


def test_there_are_paper_scale_options_for_both_datasets():
    names = {os.path.basename(p) for p in SHIPPED}
    for stage in ('CFMG', 'ORNet'):
        for dataset in ('SIDD', 'GoPro'):
            assert f'train_{stage}_{dataset}.yml' in names


@pytest.mark.filterwarnings('ignore:torch.meshgrid')  # basicsr's SwinIR builds its relative positions so
@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_option_file_is_valid(path):
    import pyiqa
    import torch
    from basicsr.archs import build_network

    import gtplus_models  # noqa: F401  (registers everything)
    from gtplus_models.options import check_registry_names, check_types, load_yaml
    opt = load_yaml(path)
    is_train = os.sep + 'train' + os.sep in path
    check_types(opt, is_train)
    check_registry_names(opt)
    networks = [key for key, value in opt.items() if key.startswith('network_') and isinstance(value, dict)]
    assert 'network_g' in networks
    for key in networks:
        net = build_network(buildable(opt[key]))
        assert sum(p.numel() for p in net.parameters()) > 0
        assert isinstance(net, torch.nn.Module)
    for metric in ((opt.get('train') or {}).get('quality_opt') or {}).get('metrics', []):
        assert metric['name'] in pyiqa.list_models(metric_mode='NR'), metric
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if metric['type'] == 'calculate_pyiqa':
            assert metric['metric'] in pyiqa.list_models(), name


def exported_ddpm(path):
    """The shipped LQDiffusionModel option file whose export ``path`` (experiments/<name>/models/diffusers_*) is."""
    from gtplus_models.options import load_yaml
    for candidate in SHIPPED:
        opt = load_yaml(candidate)
        if opt.get('model_type') == 'LQDiffusionModel' and path.startswith(f'experiments/{opt["name"]}/models/'
                                                                            'diffusers_'):
            return opt
    raise AssertionError(f'{path} is the export of no shipped LQDiffusionModel option file')


def buildable(block):
    """A copy of a network block that builds here: a DiffusionRefinedSynthesizer whose UNet is the (not yet trained)
    export of a shipped LQ-DDPM gets that option file's network_g instead, the network its export will hold."""
    block = copy.deepcopy(block)
    path = (block.get('unet') or {}).get('pretrained_path') if block.get('type') == 'DiffusionRefinedSynthesizer' \
        else None
    if path and not os.path.exists(path):
        block['unet'] = exported_ddpm(path)['network_g']
    return block


def load_shipped(name):
    from gtplus_models.options import load_yaml
    paths = [p for p in SHIPPED if os.path.basename(p) == name]
    assert len(paths) == 1, name
    return load_yaml(paths[0])


def train_dataset_entries(opt):
    """The train dataset's options and, for a GTPlusConcatDataset, those of each entry."""
    from gtplus_models.options import walk_datasets
    return [entry for _, entry in walk_datasets('datasets.train', opt['datasets']['train'])]


def test_joint_sidd_gopro_options_repeat_gopro_15_times():
    for stage in ('CFMG', 'ORNet'):
        opt = load_shipped(f'train_{stage}_SIDD_GoPro.yml')
        train = opt['datasets']['train']
        assert train['type'] == 'GTPlusConcatDataset'
        roots = [(entry['dataroot_gt'], entry.get('repeat', 1)) for entry in train['datasets']]
        assert roots == [('datasets/SIDD/train/gt_crops.lmdb', 1), ('datasets/GoPro/train/gt_crops.lmdb', 15)]
        assert {key for key in opt['datasets'] if key.startswith('val')} == {'val_1', 'val_2'}


@pytest.mark.parametrize('path', [p for p in SHIPPED if os.sep + os.path.join('train', 'EnhancedSupervision') in p],
                         ids=lambda p: os.path.basename(p))
def test_paper_scale_training_uses_the_official_effective_loss_scales(path):
    """The official code takes its losses on [-1,1] tensors: MSE x4 and L1 x2 against gtplus's [0,1] ones."""
    from gtplus_models.enhanced_supervision import OFFICIAL_L1_WEIGHT, OFFICIAL_MSE_WEIGHT
    from gtplus_models.options import load_yaml
    opt = load_yaml(path)
    train = opt['train']
    for entry in train_dataset_entries(opt):
        if 'type' in entry and entry['type'] != 'GTPlusConcatDataset':
            assert entry['use_hflip'] is True and entry['use_rot'] is False  # official: horizontal flips only
    assert train['grad_clip'] == 1.0 and train['warmup_iter'] == 500
    assert train['optim_g']['type'] == 'AdamW' and train['optim_g']['weight_decay'] == pytest.approx(1e-2)
    if opt['model_type'] == 'CFMGModel':
        assert train['fidelity_opt'] == {'type': 'MSELoss', 'loss_weight': OFFICIAL_MSE_WEIGHT, 'reduction': 'mean'}
        assert OFFICIAL_MSE_WEIGHT == 4.0
    else:
        assert opt['model_type'] == 'ORNetModel'
        assert train['pixel_opt'] == {'type': 'L1Loss', 'loss_weight': OFFICIAL_L1_WEIGHT, 'reduction': 'mean'}
        assert OFFICIAL_L1_WEIGHT == 2.0
        assert train['clamp_output'] is True and train['cond_per_sample'] is False


@pytest.mark.parametrize('path', SYNTH_ONLY, ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_synthesizer_file_is_valid(path):
    """A synth.yml is what `gtplus synthesize --synth-opt` reads: one registered network_synth block that builds."""
    from basicsr.archs import build_network
    from basicsr.utils.registry import ARCH_REGISTRY

    import gtplus_models  # noqa: F401  (registers everything)
    from gtplus_models.options import check_constructor_arguments
    from gtplus_models.synthesis import read_synth_opt
    block = read_synth_opt(path)
    check_constructor_arguments('network_synth', ARCH_REGISTRY.get(block['type']), block)
    synth = build_network(buildable(block))
    assert synth.scale == block['scale'] and synth.min_size() > 0


def test_diffusion_pairs_are_the_paper_setup():
    """METHODS.md §4: the 256^2 LQ-DDPM (128/256/512/512, attention at level 3, 2 layers, T = 1000 linear, epsilon,
    t < 250, AdamW 1e-4, EMA, fp16) on real LQ; UniPC 50 steps, max strength 0.25 after the StableSR degradation; the
    fine-tuning uses that very block, loads the DDPM's export and validates on a real LR/HR pair."""
    from gtplus_models.synthesis import read_synth_opt
    ddpm = load_shipped('train_LQDDPM_256.yml')
    assert ddpm['model_type'] == 'LQDiffusionModel' and ddpm['datasets']['train']['type'] == 'GTPlusSingleHRDataset'
    assert ddpm['datasets']['train']['gt_size'] == ddpm['network_g']['sample_size'] == 256
    unet = ddpm['network_g']
    assert unet['block_out_channels'] == [128, 256, 512, 512] and unet['layers_per_block'] == 2
    assert unet['down_block_types'] == ['DownBlock2D'] * 3 + ['AttnDownBlock2D']
    assert unet['up_block_types'] == ['AttnUpBlock2D'] + ['UpBlock2D'] * 3
    assert ddpm['noise_scheduler'] == {'type': 'DDPMScheduler', 'num_train_timesteps': 1000,
                                       'beta_schedule': 'linear', 'prediction_type': 'epsilon'}
    train = ddpm['train']
    assert train['max_timestep'] == 250 and train['ema_decay'] > 0 and train['mixed_precision'] == 'fp16'
    assert train['optim_g']['type'] == 'AdamW' and train['optim_g']['lr'] == pytest.approx(1e-4)
    assert train['export_diffusers'] is True
    synth = read_synth_opt([p for p in SYNTH_ONLY if p.endswith('synth_DiffusionRefined_UniPC50.yml')][0])
    assert synth['sampler'] == {'type': 'UniPCMultistepScheduler'} and synth['steps'] == 50
    assert synth['max_strength'] == 0.25 and synth['first_stage']['preset'] == 'stablesr'
    assert synth['unet'] == {'pretrained_path': f'experiments/{ddpm["name"]}/models/diffusers_latest'}
    fine_tuning = load_shipped('train_EDSR_x4_diffusion_pairs.yml')
    assert fine_tuning['model_type'] == 'SynthesizedSRModel' and fine_tuning['network_synth'] == synth
    assert fine_tuning['path']['pretrain_network_g'] and 'dataroot_lq' not in fine_tuning['datasets']['train']
    assert fine_tuning['datasets']['val']['dataroot_lq'] and fine_tuning['datasets']['train']['gt_size'] % 4 == 0


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_the_released_cfmg_is_loaded_with_its_fftshift(path):
    """A CFMG whose weights are the released CFMG.pkl must shift over all axes, as the released code did."""
    from gtplus_models.enhanced_supervision import official_cfmg_shift_warning
    from gtplus_models.options import load_yaml
    opt = load_yaml(path)
    for key, value in opt['path'].items():
        if key.startswith('pretrain_network_') and value:
            network = opt[key[len('pretrain_'):]]
            assert official_cfmg_shift_warning(network, value, f'path.{key}') is None, key
            if os.path.basename(value) == 'CFMG.pkl':
                assert network['official_fftshift'] is True


def test_joint_train_datasets_build_on_tiny_data(tmp_path):
    """The joint option files' train datasets build through basicsr, with every root replaced by a tiny folder."""
    import cv2
    import numpy as np
    from basicsr.data import build_dataset

    import gtplus_data  # noqa: F401  (registers the datasets)

    def tiny_folder(path, num):
        os.makedirs(path, exist_ok=True)
        rng = np.random.RandomState(num)
        for i in range(num):
            cv2.imwrite(os.path.join(path, f'k{i}.png'), rng.randint(0, 256, (8, 8, 3), dtype=np.uint8))
        return path

    for stage in ('CFMG', 'ORNet'):
        train = load_shipped(f'train_{stage}_SIDD_GoPro.yml')['datasets']['train']
        sizes = []
        for index, entry in enumerate(train['datasets']):
            num = 3 + index  # SIDD: 3 images, GoPro: 4
            sizes.append(num * entry.get('repeat', 1))
            entry['dataroot_gt'] = tiny_folder(str(tmp_path / f'{index}_gt'), num)
            entry['dataroot_variants'] = [tiny_folder(str(tmp_path / f'{index}_v{v}'), num) for v in range(3)]
            entry.update(io_backend={'type': 'disk'}, gt_size=8)
        train['phase'] = 'train'
        dataset = build_dataset(train)
        assert len(dataset) == sum(sizes) == 3 + 15 * 4
        assert dataset[len(dataset) - 1]['variants'].shape == (3, 3, 8, 8)


UNDERTRAINED_FINE_TUNING = ['train_EDSR_x4_undertrained.yml', 'train_RRDBNet_x4_undertrained.yml',
                            'train_SwinIR_x4_undertrained.yml']


def test_undertrained_vqvae2_sweep_is_the_paper_setup():
    """DF2K 1024² crops ↓×4, VQ-VAE-2 defaults, Adam 3e-4, MSE + 0.25·latent in the official balance, epochs 4-64."""
    import inspect

    from gtplus_arch import VQVAE2
    from gtplus_models.reconstruction_model import DEFAULT_PIXEL_OPT, DEFAULT_SNAPSHOT_EPOCHS
    opt = load_shipped('train_VQVAE2_DF2K_epochs.yml')
    assert opt['model_type'] == 'ReconstructionModel' and opt['scale'] == 4 and 'network_first_stage' not in opt
    assert opt['datasets']['train']['gt_size'] == 1024 and 'DF2K' in opt['datasets']['train']['dataroot_gt']
    defaults = {k: v.default for k, v in inspect.signature(VQVAE2).parameters.items()}
    assert opt['network_g'] == dict(defaults, type='VQVAE2')
    train = opt['train']
    assert train['optim_g']['type'] == 'Adam' and train['optim_g']['lr'] == pytest.approx(3e-4)
    assert train['pixel_opt'] == DEFAULT_PIXEL_OPT and train['latent_loss_weight'] == 0.25
    assert train['snapshot_epochs'] == list(DEFAULT_SNAPSHOT_EPOCHS) == [4, 8, 16, 32, 64]


@pytest.mark.parametrize('name', UNDERTRAINED_FINE_TUNING + ['train_EDSR_x4_from_synthesized_lmdb.yml'])
def test_undertrained_fine_tuning_loads_the_epoch_8_snapshot_of_the_sweep(name):
    """Fine-tuning starts from pretrained SR weights, and validates on a real LR/HR pair; the online files degrade
    with the sweep's own VQ-VAE-2 (same block, its epoch-8 snapshot) behind the bicubic it was trained on."""
    opt = load_shipped(name)
    sweep = load_shipped('train_VQVAE2_DF2K_epochs.yml')
    assert opt['path']['pretrain_network_g'] and opt['train']['pixel_opt']['type'] == 'L1Loss'
    assert opt['datasets']['val']['dataroot_lq'] and opt['datasets']['val']['dataroot_gt']
    assert opt['datasets']['train']['gt_size'] % opt['scale'] == 0
    if name not in UNDERTRAINED_FINE_TUNING:
        assert opt['model_type'] == 'SRModel' and opt['datasets']['train']['dataroot_lq'].endswith('_lq.lmdb')
        return
    assert opt['model_type'] == 'SynthesizedSRModel' and 'dataroot_lq' not in opt['datasets']['train']
    synth = opt['network_synth']
    assert synth['type'] == 'UndertrainedReconstructionSynthesizer' and synth['scale'] == opt['scale']
    assert synth['reconstruction'] == sweep['network_g']
    assert synth['first_stage'] == {'type': 'BicubicSynthesizer', 'scale': sweep['scale']}
    assert opt['path']['pretrain_network_synth'] == f'experiments/{sweep["name"]}/models/net_g_epoch8.pth'
