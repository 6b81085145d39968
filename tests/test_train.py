"""End-to-end entry points: gtplus train/test on CPU, --auto_resume, torchrun over 2 CPU processes, import order."""
import glob
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import (TINY_MSRRESNET, make_paired_pngs, python_exe, run_cli, sr_train_options,
                      write_yaml)

TINY_NAFNET = {'type': 'GTPlusNAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
               'dec_blk_nums': [1, 1]}


def models_dir(cwd, name):
    return os.path.join(cwd, 'experiments', name, 'models')


def train_log(cwd, name):
    logs = sorted(glob.glob(os.path.join(cwd, 'experiments', name, 'train_*.log')))
    with open(logs[-1]) as f:
        return f.read()


def test_gtplus_help_lists_subcommands():
    proc = run_cli(['--help'], cwd='.')
    assert 'train' in proc.stdout and 'test' in proc.stdout


def test_train_msrresnet_on_png_folders_then_test(tmp_path):
    gt_dir, lq_dir = make_paired_pngs(str(tmp_path / 'data'))
    work = tmp_path / 'work'
    work.mkdir()
    opt_file = write_yaml(tmp_path / 'train.yml', sr_train_options(gt_dir, lq_dir, TINY_MSRRESNET))
    run_cli(['train', '-opt', opt_file], cwd=work)
    models = models_dir(str(work), 'toy_sr')
    assert sorted(os.listdir(models)) == ['net_g_10.pth', 'net_g_20.pth', 'net_g_latest.pth']
    log = train_log(str(work), 'toy_sr')
    assert 'Validation toy_val' in log and '# psnr:' in log
    state = torch.load(os.path.join(models, 'net_g_latest.pth'), weights_only=True)
    assert state['params']['conv_first.weight'].shape == (8, 3, 3, 3)

    test_opt = sr_train_options(gt_dir, lq_dir, TINY_MSRRESNET, name='toy_sr_test')
    test_opt['datasets'] = {'test_1': test_opt['datasets']['val']}
    test_opt['path']['pretrain_network_g'] = os.path.join(models, 'net_g_latest.pth')
    test_opt['val']['save_img'] = True
    for key in ['train', 'logger']:
        test_opt.pop(key)
    test_file = write_yaml(tmp_path / 'test.yml', test_opt)
    # python -m gtplus_models.test is the same entry point as gtplus test
    proc = subprocess.run([python_exe(), '-m', 'gtplus_models.test', '-opt', test_file], cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = glob.glob(str(work / 'results' / 'toy_sr_test' / 'visualization' / 'toy_val' / '*.png'))
    assert len(saved) == 4


def test_train_gtplus_network_with_python_m(tmp_path):
    gt_dir, lq_dir = make_paired_pngs(str(tmp_path / 'data'), scale=1)
    opt = sr_train_options(gt_dir, lq_dir, TINY_NAFNET, scale=1, name='toy_nafnet', total_iter=10)
    opt_file = write_yaml(tmp_path / 'nafnet.yml', opt)
    proc = subprocess.run([python_exe(), '-m', 'gtplus_models.train', '-opt', opt_file], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(os.path.join(models_dir(str(tmp_path), 'toy_nafnet'), 'net_g_10.pth'))
    assert 'Network [GTPlusNAFNet] is created.' in train_log(str(tmp_path), 'toy_nafnet')


def test_auto_resume_continues_from_iteration_10_on_cpu(tmp_path):
    gt_dir, lq_dir = make_paired_pngs(str(tmp_path / 'data'))
    opt_file = write_yaml(tmp_path / 'train.yml', sr_train_options(gt_dir, lq_dir, TINY_MSRRESNET, total_iter=20))
    # The first run stops right after saving its iteration-10 checkpoint.
    run_cli(['train', '-opt', opt_file, '--force_yml', 'train:total_iter=10'], cwd=tmp_path)
    states = tmp_path / 'experiments' / 'toy_sr' / 'training_states'
    assert sorted(os.listdir(states)) == ['10.state']
    run_cli(['train', '-opt', opt_file, '--auto_resume'], cwd=tmp_path)
    log = train_log(str(tmp_path), 'toy_sr')
    assert 'Resuming training from epoch: ' in log and 'iter: 10.' in log
    assert 'Start training from epoch: ' in log and 'iter: 10\n' in log
    assert sorted(os.listdir(states)) == ['10.state', '20.state']
    resumed = torch.load(states / '20.state', weights_only=True)
    # Adam's step counter continued from the restored optimizer state: 10 restored + 10 new steps.
    first_param_state = next(iter(resumed['optimizers'][0]['state'].values()))
    assert int(first_param_state['step']) == 20


RANK_DUMP = '''
import os, sys, torch
import gtplus_models.train
from basicsr.models.sr_model import SRModel

original_save = SRModel.save

def save_and_dump(self, epoch, current_iter):
    original_save(self, epoch, current_iter)
    if current_iter == -1:  # the final save: every rank writes what it holds
        bare = self.get_bare_model(self.net_g)
        torch.save(bare.state_dict(), os.path.join(os.environ['DUMP_DIR'], f"rank{self.opt['rank']}.pth"))

SRModel.save = save_and_dump
gtplus_models.train.module_main(is_train=True)
'''


def test_torchrun_two_cpu_processes_agree(tmp_path):
    gt_dir, lq_dir = make_paired_pngs(str(tmp_path / 'data'), num=4)
    opt = sr_train_options(gt_dir, lq_dir, TINY_MSRRESNET, name='toy_ddp', total_iter=6)
    opt['logger']['save_checkpoint_freq'] = 3
    opt_file = write_yaml(tmp_path / 'ddp.yml', opt)
    script = tmp_path / 'rank_dump.py'
    script.write_text(RANK_DUMP)
    env = dict(os.environ, DUMP_DIR=str(tmp_path), OMP_NUM_THREADS='1')
    with socket.socket() as sock:  # torchrun's static rendezvous hangs with port 0: pick a free one
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    cmd = [python_exe(), '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
           f'--master_port={port}', str(script), '-opt', opt_file, '--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rank0 = torch.load(tmp_path / 'rank0.pth', weights_only=True)
    rank1 = torch.load(tmp_path / 'rank1.pth', weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    log = train_log(str(tmp_path), 'toy_ddp')
    assert 'World size (gpu number): 2' in log
    init = torch.load(models_dir(str(tmp_path), 'toy_ddp') + '/net_g_3.pth', weights_only=True)['params']
    assert any(not torch.equal(init[k], rank0[k]) for k in rank0)  # training moved the weights after iter 3


@pytest.mark.parametrize('order', [['basicsr', 'gtplus_arch', 'gtplus_models', 'gtplus_data'],
                                   ['gtplus_arch', 'gtplus_models', 'gtplus_data', 'basicsr']])
def test_import_order_has_no_registry_collision(order):
    code = '; '.join(f'import {name}' for name in order)
    code += ('; from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY; '
             "assert 'MSRResNet' in ARCH_REGISTRY and 'GTPlusNAFNet' in ARCH_REGISTRY; print('ok')")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
