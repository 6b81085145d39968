"""Bad option files fail up front with a message naming the key, never with a traceback from inside basicsr."""
import os

import pytest

from conftest import TINY_MSRRESNET, make_paired_pngs, run_cli, sr_train_options, write_yaml
from gtplus_models.options import OptionsError, apply_overrides, parse_options


@pytest.fixture
def base_opt(tmp_path):
    gt_dir, lq_dir = make_paired_pngs(str(tmp_path / 'data'), num=2)
    return sr_train_options(gt_dir, lq_dir, dict(TINY_MSRRESNET))


def parse(tmp_path, opt, *flags):
    opt_file = write_yaml(tmp_path / 'opt.yml', opt)
    return parse_options(str(tmp_path), True, ['-opt', opt_file, *flags])


def set_key(opt, keys, value):
    """opt[keys[0]][keys[1]]... = value."""
    for key in keys[:-1]:
        opt = opt[key]
    opt[keys[-1]] = value


def expect_error(tmp_path, opt, *fragments):
    with pytest.raises(OptionsError) as err:
        parse(tmp_path, opt)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_good_options_parse_and_root_under_cwd(tmp_path, base_opt):
    opt, _ = parse(tmp_path, base_opt)
    assert opt['path']['experiments_root'] == os.path.join(str(tmp_path), 'experiments', 'toy_sr')
    assert opt['dist'] is False and opt['rank'] == 0 and opt['world_size'] == 1
    assert opt['datasets']['train']['phase'] == 'train' and opt['datasets']['train']['scale'] == 4


def test_unknown_arch_names_registry_and_closest(tmp_path, base_opt):
    base_opt['network_g']['type'] = 'MSRResnet'
    message = expect_error(tmp_path, base_opt, 'network_g.type', 'ARCH registry', 'MSRResNet')
    assert 'Closest registered names' in message


def test_unknown_model_dataset_loss_metric(tmp_path, base_opt):
    cases = [(('model_type', ), 'SRModle', 'SRModel'), (('datasets', 'train', 'type'), 'PairedImageDatset',
                                                        'PairedImageDataset'),
             (('train', 'pixel_opt', 'type'), 'L1Los', 'L1Loss'),
             (('val', 'metrics', 'psnr', 'type'), 'calculate_psrn', 'calculate_psnr'),
             (('train', 'optim_g', 'type'), 'Adamw', 'AdamW'),
             (('train', 'scheduler', 'type'), 'CosineLR', 'CosineAnnealingRestartLR')]
    for keys, wrong, right in cases:
        opt = sr_train_options(base_opt['datasets']['train']['dataroot_gt'],
                               base_opt['datasets']['train']['dataroot_lq'], dict(TINY_MSRRESNET))
        node = opt
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = wrong
        expect_error(tmp_path, opt, '.'.join(keys), right)


def test_missing_dataroot_names_key_and_path(tmp_path, base_opt):
    base_opt['datasets']['val']['dataroot_lq'] = str(tmp_path / 'nowhere')
    expect_error(tmp_path, base_opt, 'datasets.val.dataroot_lq', str(tmp_path / 'nowhere'))


def joint_train_dataset(base_opt):
    """Make the train set a GTPlusConcatDataset of two copies of the paired folders (the second repeated 2x)."""
    train = base_opt['datasets']['train']
    entry = {key: train.pop(key) for key in ['type', 'dataroot_gt', 'dataroot_lq', 'filename_tmpl', 'io_backend',
                                             'gt_size', 'use_hflip', 'use_rot']}
    train.update(type='GTPlusConcatDataset', datasets=[dict(entry), dict(entry, repeat=2)])
    return train


def test_nested_datasets_are_checked_and_named(tmp_path, base_opt):
    train = joint_train_dataset(base_opt)
    opt, _ = parse(tmp_path, base_opt)
    assert opt['datasets']['train']['type'] == 'GTPlusConcatDataset'
    train['datasets'][1]['dataroot_gt'] = str(tmp_path / 'nowhere')
    expect_error(tmp_path, base_opt, 'datasets.train.datasets[1].dataroot_gt', str(tmp_path / 'nowhere'))


@pytest.mark.parametrize('key, value, fragment', [
    ('type', 'PairedImageDatset', "datasets.train.datasets[1].type"),
    ('repeat', 1.5, 'datasets.train.datasets[1].repeat'),
    ('gt_size', '16', 'datasets.train.datasets[1].gt_size'),
])
def test_nested_dataset_names_and_types(tmp_path, base_opt, key, value, fragment):
    joint_train_dataset(base_opt)['datasets'][1][key] = value
    message = expect_error(tmp_path, base_opt, fragment)
    if key == 'type':
        assert 'PairedImageDataset' in message  # the closest registered name


def test_nested_datasets_must_be_a_list_of_mappings(tmp_path, base_opt):
    train = joint_train_dataset(base_opt)
    train['datasets'].append('GT')
    expect_error(tmp_path, base_opt, 'datasets.train.datasets[2] must be a dataset option mapping')
    train['datasets'] = {'type': 'PairedImageDataset'}
    expect_error(tmp_path, base_opt, 'datasets.train.datasets must be a list')


def test_missing_pretrain_names_key_and_path(tmp_path, base_opt):
    base_opt['path']['pretrain_network_g'] = str(tmp_path / 'net_g.pth')
    expect_error(tmp_path, base_opt, 'path.pretrain_network_g', str(tmp_path / 'net_g.pth'))


@pytest.mark.parametrize('keys, value, fragment', [
    (('num_gpu', ), 'two', 'num_gpu'),
    (('train', 'total_iter'), '1e3x', 'train.total_iter'),
    (('datasets', 'train', 'batch_size_per_gpu'), 2.5, 'datasets.train.batch_size_per_gpu'),
    (('logger', 'save_checkpoint_freq'), None, 'logger.save_checkpoint_freq'),
    (('name', ), 7, 'name'),
])
def test_wrong_types_name_the_key(tmp_path, base_opt, keys, value, fragment):
    set_key(base_opt, keys, value)
    expect_error(tmp_path, base_opt, fragment)


@pytest.mark.parametrize('keys, value, fragment', [
    (('train', 'total_iter'), 0, 'train.total_iter must be >= 1, got 0'),
    (('train', 'total_iter'), -5, 'train.total_iter must be >= 1, got -5'),
    (('datasets', 'train', 'batch_size_per_gpu'), 0, 'datasets.train.batch_size_per_gpu must be >= 1'),
    (('datasets', 'train', 'num_worker_per_gpu'), -1, 'datasets.train.num_worker_per_gpu must be >= 0'),
    (('datasets', 'train', 'gt_size'), -32, 'datasets.train.gt_size must be >= 1'),
    (('logger', 'save_checkpoint_freq'), 0, 'logger.save_checkpoint_freq must be >= 1'),
    (('train', 'optim_g', 'lr'), 'fast', "train.optim_g.lr must be a number, got 'fast'"),
    (('train', 'optim_g', 'betas'), ['0.9', 'x'], "train.optim_g.betas[1] must be a number, got 'x'"),
])
def test_out_of_range_values_name_the_key(tmp_path, base_opt, keys, value, fragment):
    """total_iter 0 or -5 once saved an untrained net_g_latest.pth and exited 0."""
    set_key(base_opt, keys, value)
    expect_error(tmp_path, base_opt, fragment)


def test_numeric_strings_in_optimiser_and_scheduler_are_numbers(tmp_path, base_opt):
    """PyYAML reads `lr: 1e-3` (no dot) as the string '1e-3': it is the number users meant."""
    import yaml
    base_opt['train']['optim_g']['lr'] = '1e-3'
    base_opt['train']['optim_g']['betas'] = ['9e-1', '0.99']
    opt, _ = parse(tmp_path, base_opt)
    assert opt['train']['optim_g']['lr'] == 1e-3 and isinstance(opt['train']['optim_g']['lr'], float)
    assert opt['train']['optim_g']['betas'] == [0.9, 0.99]
    raw = yaml.safe_load('lr: 1e-3')
    assert raw['lr'] == '1e-3'  # the PyYAML behaviour this guards against


def test_gpu_requested_on_cpu_machine(tmp_path, base_opt):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    base_opt['num_gpu'] = 1
    expect_error(tmp_path, base_opt, 'num_gpu: 0')


def test_force_yml_is_typed_and_never_evaluated(tmp_path, base_opt):
    opt, _ = parse(tmp_path, base_opt, '--force_yml', 'train:total_iter=7', 'train:optim_g:betas=[0.5, 0.9]',
                   "name=__import__('os').getcwd()")
    assert opt['train']['total_iter'] == 7
    assert opt['train']['optim_g']['betas'] == [0.5, 0.9]
    assert opt['name'] == "__import__('os').getcwd()"  # a plain string, not code
    opt, _ = parse(tmp_path, base_opt, '--force_yml', 'train:total_iter=7', '--force_yml', 'name=repeated')
    assert opt['train']['total_iter'] == 7 and opt['name'] == 'repeated'  # a repeated flag adds, never replaces
    with pytest.raises(OptionsError, match="'nothing' is not a mapping"):
        apply_overrides({'a': 1}, ['nothing:b=1'])
    with pytest.raises(OptionsError, match='must look like'):
        apply_overrides({'a': 1}, ['a'])


def test_unsafe_yaml_is_refused(tmp_path):
    bad = tmp_path / 'evil.yml'
    bad.write_text('name: !!python/object/apply:os.getcwd []\n')
    with pytest.raises(OptionsError, match='not valid YAML'):
        parse_options(str(tmp_path), True, ['-opt', str(bad)])


def test_cli_reports_bad_config_without_traceback(tmp_path, base_opt):
    base_opt['network_g']['type'] = 'MSRResNett'
    opt_file = write_yaml(tmp_path / 'bad.yml', base_opt)
    proc = run_cli(['train', '-opt', opt_file], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    assert 'network_g.type' in proc.stderr and 'MSRResNet' in proc.stderr
    assert not (tmp_path / 'experiments').exists()  # nothing was created for a config that cannot run


def write_pair(root, gt_shape, lq_shape, lq_name='0000'):
    import cv2
    import numpy as np
    for sub, shape, name in (('GT', gt_shape, '0000'), ('LQ', lq_shape, lq_name)):
        os.makedirs(root / sub, exist_ok=True)
        cv2.imwrite(str(root / sub / f'{name}.png'), np.zeros(shape + (3, ), np.uint8))
    return str(root / 'GT'), str(root / 'LQ')


def test_filename_template_pairs_and_validation_trim_are_accepted(tmp_path):
    """The data checks follow basicsr: folder pairs through filename_tmpl, validation GT trimmed to scale x LQ;
    training crops need GT = scale x LQ exactly."""
    gt, lq = write_pair(tmp_path, (33, 34), (8, 8), lq_name='0000x4')
    opt = sr_train_options(gt, lq, dict(TINY_MSRRESNET), gt_size=16)
    for phase in ('train', 'val'):
        opt['datasets'][phase]['filename_tmpl'] = '{}x4'
    write_pair(tmp_path / 'train', (32, 32), (8, 8), lq_name='0000x4')
    opt['datasets']['train'].update(dataroot_gt=str(tmp_path / 'train' / 'GT'),
                                    dataroot_lq=str(tmp_path / 'train' / 'LQ'))
    parse(tmp_path, opt)  # val: 33x34 GT for an 8x8 LQ trims to 32x32; train pairs are exact
    opt['datasets']['train'].update(dataroot_gt=gt, dataroot_lq=lq)
    expect_error(tmp_path, opt, 'GT 0000 is 33x34 but its LQ is 8x8', 'scale is 4')
    opt['datasets']['train']['filename_tmpl'] = '{}'
    expect_error(tmp_path, opt, "1 key(s) only in datasets.train.dataroot_lq", '0000x4')
