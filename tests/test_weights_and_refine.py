"""Weights files that cannot serve their network, refine's input/output faults, and windowed restorers (SwinIR)
padded to their window, tiled or not. Tiny networks on CPU; the command-line rows are in test_bad_inputs.py."""
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import TINY_MSRRESNET
from data_helpers import RunsCode

TINY_ORNET = {'type': 'ORNet', 'width': 4, 'enc_blk_nums': [1, 1], 'middle_blk_num': 1, 'dec_blk_nums': [1, 1]}
TINY_CFMG = {'type': 'CFMG', 'num_sources': 3, 'width': 4, 'num_levels': 2, 'hidden': 8}


def tiny_swinir(upscale):
    """basicsr's SwinIR at its smallest: window 4, one block."""
    return {'type': 'SwinIR', 'img_size': 8, 'embed_dim': 12, 'depths': [1], 'num_heads': [1], 'window_size': 4,
            'mlp_ratio': 2, 'upscale': upscale, 'upsampler': 'pixelshuffledirect' if upscale > 1 else ''}


def save_network(folder, name, network_opt, seed=0, wrap='params'):
    """Write ``name.yml`` and ``name.pth`` (random weights of ``network_opt``); returns (yml, pth) paths."""
    from basicsr.archs import build_network
    torch.manual_seed(seed)
    net = build_network(dict(network_opt))
    yml, pth = os.path.join(folder, f'{name}.yml'), os.path.join(folder, f'{name}.pth')
    torch.save({wrap: net.state_dict()} if wrap else net.state_dict(), pth)
    with open(yml, 'w') as f:
        yaml.safe_dump(dict(network_opt), f)
    return yml, pth


def write_bad_file(path, kind):
    if kind == 'empty':
        open(path, 'wb').close()
    elif kind == 'garbage':
        with open(path, 'wb') as f:
            f.write(np.random.RandomState(0).bytes(300))
    elif kind == 'truncated':
        torch.save({'w': torch.zeros(64)}, path)
        data = open(path, 'rb').read()
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 2])
    elif kind == 'list':
        torch.save([1, 2, 3], path)
    elif kind == 'tensor':
        torch.save(torch.zeros(3), path)
    elif kind == 'training-state':
        torch.save({'epoch': 1, 'iter': 20, 'optimizers': [], 'schedulers': []}, path)
    return path


BAD_FILES = {
    'empty': 'is an empty file',
    'garbage': 'is not a PyTorch checkpoint that torch.load can read',
    'truncated': 'is not a PyTorch checkpoint that torch.load can read',
    'list': 'holds a list, not a state dict',
    'tensor': 'holds a Tensor, not a state dict',
    'training-state': 'holds no tensors (keys: epoch, iter, optimizers (+1 more))',
}


@pytest.mark.parametrize('kind', list(BAD_FILES))
def test_a_bad_weights_file_is_one_line_naming_flag_and_file(tmp_path, kind):
    from gtplus_models.checkpoints import CheckpointError, build_frozen_network
    path = write_bad_file(str(tmp_path / f'{kind}.pth'), kind)
    with pytest.raises(CheckpointError) as error:
        build_frozen_network(TINY_ORNET, path, '--ornet-weights', 'cpu')
    message = str(error.value)
    assert message.startswith(f'--ornet-weights ({path}) ') and BAD_FILES[kind] in message, message
    assert '\n' not in message and len(message) < 300, message


def test_a_pickle_that_runs_code_stays_refused_in_one_line(tmp_path):
    from gtplus_models.checkpoints import CheckpointError, load_state_dict_file
    marker, path = tmp_path / 'ran', str(tmp_path / 'evil.pth')
    torch.save({'w': RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as error:
        load_state_dict_file(path, '--restorer-weights')
    message = str(error.value)
    assert not marker.exists()
    assert f'--restorer-weights ({path}) is refused by torch.load(weights_only=True)' in message
    assert 'posix.system' in message and '\n' not in message and 'PyTorch 2.6' not in message


def test_weights_of_another_network_are_summarised(tmp_path):
    from gtplus_models.checkpoints import CheckpointError, build_frozen_network
    _, ornet_pth = save_network(str(tmp_path), 'ornet', TINY_ORNET)
    with pytest.raises(CheckpointError) as error:
        build_frozen_network(TINY_MSRRESNET, ornet_pth, '--restorer-weights', 'cpu')
    message = str(error.value)
    assert message.startswith(f'--restorer-weights ({ornet_pth}) holds 100 tensors, none of which match '
                              "MSRResNet's 14 (missing: body.0.conv1.bias, body.0.conv1.weight, body.0.conv2.bias "
                              '(+11 more); unexpected: '), message
    assert message.endswith('is it the checkpoint of another network?') and len(message) < 400


def test_other_widths_name_the_first_shapes(tmp_path):
    from gtplus_models.checkpoints import CheckpointError, build_frozen_network
    _, narrow = save_network(str(tmp_path), 'narrow', TINY_MSRRESNET)
    with pytest.raises(CheckpointError) as error:
        build_frozen_network(dict(TINY_MSRRESNET, num_feat=16), narrow, 'path.pretrain_network_g', 'cpu')
    message = str(error.value)
    assert "holds 14 tensors, 1 of which matches MSRResNet's 14 (other shapes: body.0.conv1.bias 8 here, 16 in the " \
           'network, body.0.conv1.weight 8x8x3x3 here, 16x16x3x3 in the network' in message, message
    assert '(+10 more)' in message and message.endswith('was it trained with other network options (widths, '
                                                        'blocks, scale)?')


def test_the_expected_network_type_is_checked_before_the_weights(tmp_path):
    from gtplus_arch import CFMG, ORNet
    from gtplus_models.checkpoints import CheckpointError, load_frozen_network
    cfmg_yml, _ = save_network(str(tmp_path), 'cfmg', TINY_CFMG)
    garbage = write_bad_file(str(tmp_path / 'garbage.pth'), 'garbage')
    with pytest.raises(CheckpointError, match=r'^--ornet-opt \(.*cfmg.yml\) builds CFMG, not ORNet$'):
        load_frozen_network(cfmg_yml, garbage, 'cpu', '--ornet-opt', '--ornet-weights', ORNet)
    # a basicsr option file: its network_g is what is built
    option_file = tmp_path / 'train_msrresnet.yml'
    option_file.write_text(yaml.safe_dump({'name': 'x', 'network_g': dict(TINY_MSRRESNET)}))
    with pytest.raises(CheckpointError, match=r'^--cfmg-opt \(.*train_msrresnet.yml\) builds MSRResNet, not CFMG$'):
        load_frozen_network(str(option_file), garbage, 'cpu', '--cfmg-opt', '--cfmg-weights', CFMG)


def test_network_options_the_class_rejects_and_invalid_yaml_name_the_file(tmp_path):
    from gtplus_models.checkpoints import CheckpointError, load_frozen_network
    bad_kwarg = tmp_path / 'ornet.yml'
    bad_kwarg.write_text(yaml.safe_dump(dict(TINY_ORNET, widht=8)))
    with pytest.raises(CheckpointError, match=r"--ornet-opt \(.*ornet.yml\): ORNet rejects these options: .*'widht'"):
        load_frozen_network(str(bad_kwarg), None, 'cpu', '--ornet-opt', '--ornet-weights')
    broken = tmp_path / 'broken.yml'
    broken.write_text('type: ORNet\nwidth: [4\n')
    with pytest.raises(CheckpointError, match=r'--ornet-opt: .*broken.yml is not valid YAML \(.*line 3'):
        load_frozen_network(str(broken), None, 'cpu', '--ornet-opt', '--ornet-weights')


def bare_model(pretrain_path):
    """A basicsr model without its constructor: enough for ``load_network``."""
    from basicsr.models.base_model import BaseModel
    model = BaseModel.__new__(BaseModel)
    model.opt = {'path': {'pretrain_network_g': pretrain_path}}
    return model


def test_every_basicsr_model_loads_through_gtplus(tmp_path):
    """basicsr's own SRModel reads official plain state dicts and fails in one line, as gtplus's models do."""
    from basicsr.archs import build_network
    from basicsr.models.base_model import BaseModel

    from gtplus_models.checkpoints import CheckpointError, load_network
    assert BaseModel.load_network is load_network
    _, plain = save_network(str(tmp_path), 'plain', TINY_MSRRESNET, seed=3, wrap=None)
    net = build_network(dict(TINY_MSRRESNET))
    bare_model(plain).load_network(net, plain, strict=True, param_key='params')
    assert torch.equal(net.conv_first.weight, torch.load(plain, weights_only=True)['conv_first.weight'])
    _, ornet_pth = save_network(str(tmp_path), 'ornet', TINY_ORNET)
    with pytest.raises(CheckpointError, match=r"^path.pretrain_network_g \(.*ornet.pth\) holds 100 tensors, none of "):
        bare_model(ornet_pth).load_network(net, ornet_pth, strict=True)
    # strict_load_g: false still accepts partial checkpoints (another head), but not one of which nothing fits
    _, wide = save_network(str(tmp_path), 'wide', dict(TINY_MSRRESNET, upscale=2))
    bare_model(wide).load_network(net, wide, strict=False)
    with pytest.raises(CheckpointError, match='none of which match'):
        bare_model(ornet_pth).load_network(net, ornet_pth, strict=False)


@pytest.mark.parametrize('upscale', [1, 2])
def test_swinir_is_padded_to_its_window_and_cropped_back(upscale):
    from basicsr.archs import build_network

    from gtplus_models.tools.super_resolve import arch_enhancer
    from gtplus_models.tools.tiling import run_chain, size_rule
    torch.manual_seed(0)
    net = build_network(tiny_swinir(upscale)).eval()
    assert size_rule(net) == (4, 4)
    img = torch.rand(1, 3, 21, 18)  # neither a multiple of the window
    with torch.no_grad():
        with pytest.raises(RuntimeError):
            net(img)  # why the padding exists
        manual = net(F.pad(img, (0, 2, 0, 3), mode='reflect'))[:, :, :21 * upscale, :18 * upscale].clamp(0, 1)
    whole = run_chain([(net, False)], img)
    tiled = run_chain([(net, False)], img, tile=10, tile_pad=8)
    assert whole.shape == tiled.shape == (1, 3, 21 * upscale, 18 * upscale)
    assert torch.allclose(whole, manual, atol=1e-6)
    assert torch.allclose(tiled, whole, atol=1e-5)
    # super-resolve-gt's arch enhancer goes through the same rule
    assert torch.allclose(arch_enhancer(net, tile=10, tile_pad=8)(img), tiled, atol=1e-6)


def test_size_rules_of_the_other_networks():
    from basicsr.archs import build_network

    from gtplus_models.tools.tiling import size_rule
    ornet = build_network(dict(TINY_ORNET))
    assert size_rule(ornet) == (1, 4)  # pads itself; tiles on its 2^levels grid
    assert size_rule(build_network(dict(TINY_MSRRESNET))) == (1, 1)
    rrdb = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4}
    assert size_rule(build_network(dict(rrdb, scale=2)))[0] == 2  # pixel-unshuffle by 2
    assert size_rule(build_network(dict(rrdb, scale=1)))[0] == 4
    declared = torch.nn.Identity()
    declared.size_multiple = 8
    assert size_rule(declared) == (8, 8)


def write_pngs(folder, names, size=(13, 11)):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for name in names:
        cv2.imwrite(os.path.join(folder, name), rng.randint(0, 256, size + (3, ), dtype=np.uint8))
    return folder


@pytest.fixture
def networks(tmp_path):
    folder = str(tmp_path / 'nets')
    os.makedirs(folder)
    ornet = save_network(folder, 'ornet', TINY_ORNET)
    return {'ornet': ornet, 'swinir_x2': save_network(folder, 'swinir_x2', tiny_swinir(2))}


def test_refine_runs_a_windowed_upscaling_restorer_on_any_size(tmp_path, networks):
    from gtplus_models.tools.refine import refine
    images = write_pngs(str(tmp_path / 'in'), ['a.png'])
    out = str(tmp_path / 'out')
    keys = refine(images, out, *networks['ornet'], [0.3], *networks['swinir_x2'])
    assert keys == ['a']
    assert cv2.imread(os.path.join(out, 'restored', 'a.png')).shape == (26, 22, 3)
    assert cv2.imread(os.path.join(out, 'refined_c0.30', 'a.png')).shape == (26, 22, 3)


def test_refine_lists_every_unreadable_input_and_writes_nothing(tmp_path, networks):
    from gtplus_data.image_util import ImageReadError
    from gtplus_models.tools.refine import refine
    images = write_pngs(str(tmp_path / 'in'), ['a.png', 'c.png'])
    for name in ('b.png', 'd.png'):
        with open(os.path.join(images, name), 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n' + bytes(50))
    out = tmp_path / 'out'
    with pytest.raises(ImageReadError) as error:
        refine(images, str(out), *networks['ornet'], [0.3])
    message = str(error.value)
    assert message.startswith(f'2 unreadable image(s) in {images}, nothing refined: ')
    assert os.path.join(images, 'b.png') in message and os.path.join(images, 'd.png') in message
    assert '\n' not in message and not out.exists()


@pytest.mark.parametrize('under', [False, True])
def test_refine_refuses_an_output_path_that_is_a_file(tmp_path, networks, under):
    from gtplus_models.tools.refine import refine
    images = write_pngs(str(tmp_path / 'in'), ['a.png'])
    a_file = tmp_path / 'taken.txt'
    a_file.write_text('mine')
    out = str(a_file / 'r') if under else str(a_file)
    with pytest.raises(NotADirectoryError) as error:
        refine(images, out, *networks['ornet'], [0.3])
    assert str(error.value).startswith(f'OUT_DIR {out} ') and f'{a_file}, which is' * under in str(error.value)
    assert 'an existing file, not a folder' in str(error.value)
    assert a_file.read_text() == 'mine'


@pytest.mark.parametrize('given, missing', [('--restorer-opt', '--restorer-weights'),
                                            ('--restorer-weights', '--restorer-opt')])
def test_refine_restorer_flags_go_together(tmp_path, networks, given, missing):
    from gtplus_models.tools.refine import refine
    images = write_pngs(str(tmp_path / 'in'), ['a.png'])
    yml, pth = networks['swinir_x2']
    restorer = (yml, None) if given == '--restorer-opt' else (None, pth)
    with pytest.raises(ValueError, match=f'^{given} needs {missing}'):
        refine(images, str(tmp_path / 'out'), *networks['ornet'], [0.3], *restorer)
