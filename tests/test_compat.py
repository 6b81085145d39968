"""Each compatibility fix works, and basicsr's original fails in the same situation (so the fix is needed)."""
import importlib
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import gtplus_compat
from gtplus_compat import basicsr_patches
from gtplus_compat.torchvision_alias import LEGACY_NAME

gtplus_compat.apply_all()


def original(owner, attribute):
    return basicsr_patches.ORIGINALS[(owner, attribute)]


def run_python(code, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_torchvision_alias_is_needed_and_works():
    finders = [f for f in sys.meta_path if type(f).__name__ == '_FunctionalTensorAliasFinder']
    saved = sys.modules.pop(LEGACY_NAME, None)
    for finder in finders:
        sys.meta_path.remove(finder)
    try:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(LEGACY_NAME)
        assert gtplus_compat.install_torchvision_alias() is True
        assert gtplus_compat.install_torchvision_alias() is False  # idempotent
        legacy = importlib.import_module(LEGACY_NAME)
        from torchvision.transforms.functional import rgb_to_grayscale
        assert legacy.rgb_to_grayscale is rgb_to_grayscale
    finally:
        if saved is not None:
            sys.modules[LEGACY_NAME] = saved


def test_installed_pth_makes_plain_basicsr_import_work():
    import sysconfig
    pth = os.path.join(sysconfig.get_paths()['purelib'], 'gtplus_compat.pth')
    if not os.path.isfile(pth):
        pytest.skip('gtplus is installed in editable mode, which carries no .pth (make test installs it properly)')
    proc = run_python('import basicsr; from basicsr.data.degradations import add_jpg_compression; print("ok")')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith('ok')


def test_jpeg_quality_float_is_accepted():
    from basicsr.data import degradations
    img = np.random.RandomState(0).rand(16, 16, 3).astype(np.float32)
    import cv2
    with pytest.raises(cv2.error):
        original('basicsr.data.degradations', 'add_jpg_compression')(img, 55.7)
    out = degradations.add_jpg_compression(img, 55.7)
    assert out.shape == img.shape and out.dtype == np.float32
    expected = degradations.add_jpg_compression(img, 56)  # float quality rounds to the nearest int
    np.testing.assert_array_equal(out, expected)
    # the random variant (used by Real-ESRGAN pipelines) goes through the fixed function too
    out = degradations.random_add_jpg_compression(img, quality_range=(30, 40))
    assert out.shape == img.shape


def test_registry_error_names_registry_and_closest_names():
    from basicsr.utils.registry import ARCH_REGISTRY
    with pytest.raises(KeyError) as err:
        ARCH_REGISTRY.get('MSRResNett')
    message = str(err.value)
    assert 'ARCH registry' in message and 'MSRResNet' in message


DIST_CODE = '''
import os, torch, torch.distributed as dist
import gtplus_compat
gtplus_compat.apply_all()
from gtplus_compat import basicsr_patches as bp
from basicsr.models.base_model import BaseModel
init = bp.ORIGINALS[('basicsr.utils.dist_util', 'init_dist')] if os.environ['INIT'] == 'original' else bp.init_dist
to_device = bp.ORIGINALS[('BaseModel', 'model_to_device')] if os.environ['TO_DEVICE'] == 'original' \\
    else BaseModel.model_to_device
init('pytorch')
print('backend', dist.get_backend())
model = BaseModel.__new__(BaseModel)
model.opt = {'dist': True, 'num_gpu': 0}
model.device = torch.device('cpu')
net = to_device(model, torch.nn.Linear(2, 2))
print('wrapped', type(net).__name__)
'''


def run_dist(init, to_device):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = {'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '1', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port),
           'INIT': init, 'TO_DEVICE': to_device}
    return run_python(DIST_CODE, env)


def test_init_dist_and_model_to_device_work_on_cpu():
    proc = run_dist('patched', 'patched')
    assert proc.returncode == 0, proc.stderr
    assert 'backend gloo' in proc.stdout
    assert 'wrapped DistributedDataParallel' in proc.stdout


def test_basicsr_init_dist_fails_on_cpu():
    proc = run_dist('original', 'patched')
    assert proc.returncode != 0
    assert 'ZeroDivisionError' in proc.stderr


def test_basicsr_model_to_device_fails_on_cpu_ddp():
    proc = run_dist('patched', 'original')
    assert proc.returncode != 0 and 'backend gloo' in proc.stdout
    assert 'NVIDIA' in proc.stderr or 'CUDA' in proc.stderr


def make_training_state(tmp_path, iters):
    net = torch.nn.Linear(3, 3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    from basicsr.models.lr_scheduler import MultiStepRestartLR
    scheduler = MultiStepRestartLR(optimizer, milestones=[5, 10])
    states = tmp_path / 'training_states'
    states.mkdir()
    for it in iters:
        torch.save({'epoch': 0, 'iter': it, 'optimizers': [optimizer.state_dict()],
                    'schedulers': [scheduler.state_dict()]}, states / f'{it}.state')
    return states


def resume_opt(tmp_path, states, auto_resume):
    models = tmp_path / 'models'
    models.mkdir(exist_ok=True)
    return {'name': 'x', 'num_gpu': 0, 'auto_resume': auto_resume, 'network_g': {'type': 'X'},
            'network_restorer': {'type': 'Y'},
            'path': {'resume_state': str(states / '5.state') if not auto_resume else None,
                     'training_states': str(states), 'models': str(models),
                     'pretrain_network_restorer': '/frozen/restorer.pth'}}


def test_resume_state_loads_on_cpu(tmp_path):
    states = make_training_state(tmp_path, [5, 10])
    (tmp_path / 'models').mkdir()
    (tmp_path / 'models' / 'net_g_10.pth').write_bytes(b'')
    opt = resume_opt(tmp_path, states, auto_resume=True)
    state = basicsr_patches.load_resume_state(opt)
    assert state['iter'] == 10  # the latest state
    assert opt['path']['resume_state'].endswith('10.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_10.pth')
    # a frozen network that is never saved keeps the user's path instead of a file that does not exist
    assert opt['path']['pretrain_network_restorer'] == '/frozen/restorer.pth'


def test_basicsr_resume_fails_on_cpu(tmp_path):
    states = make_training_state(tmp_path, [5])
    opt = resume_opt(tmp_path, states, auto_resume=False)
    with pytest.raises(RuntimeError):
        original('basicsr.train', 'load_resume_state')(opt)
    assert basicsr_patches.load_resume_state(resume_opt(tmp_path, states, False))['iter'] == 5


def test_training_state_write_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves no <iter>.state that --auto_resume would pick up."""
    from basicsr.models.base_model import BaseModel
    model = BaseModel.__new__(BaseModel)
    model.opt = {'path': {'training_states': str(tmp_path)}}
    model.optimizers, model.schedulers = [], []

    def crash(obj, path):
        with open(path, 'wb') as f:
            f.write(b'trunc')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        model.save_training_state(0, 20)
    assert basicsr_patches.latest_training_state(str(tmp_path)) is None
    monkeypatch.undo()
    model.save_training_state(0, 20)
    assert basicsr_patches.latest_training_state(str(tmp_path)).endswith('20.state')


def test_yaml_loader_is_safe(tmp_path):
    import yaml
    from basicsr.utils.options import ordered_yaml
    marker = tmp_path / 'pwned'
    evil = f'!!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load(evil, Loader=ordered_yaml()[0])
    assert not marker.exists()
    yaml.load(evil, Loader=original('basicsr.utils.options', 'ordered_yaml')()[0])
    assert marker.exists()  # basicsr's own loader runs the command: the fix is needed
    loaded = yaml.load('b: 1\na: [1, 2]\n', Loader=ordered_yaml()[0])
    assert list(loaded) == ['b', 'a']  # order kept, as basicsr expects


def test_any_torch_optimizer_by_name():
    from basicsr.models.base_model import BaseModel
    model = BaseModel.__new__(BaseModel)
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(NotImplementedError):
        original('BaseModel', 'get_optimizer')(model, 'AdamW', params, 1e-3)
    optimizer = model.get_optimizer('AdamW', params, 1e-3, weight_decay=0.01)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults['weight_decay'] == 0.01
    with pytest.raises(ValueError, match='AdamW'):
        model.get_optimizer('AdamWW', params, 1e-3)


def test_vgg_loss_without_weights_fails_fast_and_loads_local_file(tmp_path, monkeypatch):
    import time

    from basicsr.archs import vgg_arch
    monkeypatch.setattr(vgg_arch, 'VGG_PRETRAIN_PATH', str(tmp_path / 'vgg19.pth'))
    start = time.time()
    with pytest.raises(FileNotFoundError, match='vgg19.pth'):
        vgg_arch.VGGFeatureExtractor(['conv1_1'], vgg_type='vgg19')
    assert time.time() - start < 5
    from torchvision.models import vgg19
    reference = vgg19(weights=None)
    torch.save(reference.state_dict(), tmp_path / 'vgg19.pth')
    extractor = vgg_arch.VGGFeatureExtractor(['conv1_1'], vgg_type='vgg19', use_input_norm=False)
    assert torch.equal(extractor.vgg_net.conv1_1.weight, reference.features[0].weight)


def test_filter2d_after_diffjpeg_works():
    """basicsr's Real-ESRGAN chain blurs (filter2D) after a JPEG step; DiffJPEG's channels-last output broke it."""
    from basicsr.utils import DiffJPEG
    from basicsr.utils.img_process_util import filter2D
    jpeger = DiffJPEG(differentiable=False)
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    quality = torch.tensor([50., 70.])
    kernel = torch.ones(2, 5, 5) / 25
    raw = original('DiffJPEG', 'forward')(jpeger, x, quality.clone())
    assert not raw.is_contiguous()
    with pytest.raises(RuntimeError, match='view'):
        filter2D(raw, kernel)
    out = jpeger(x, quality=quality.clone())
    assert out.is_contiguous() and torch.equal(out, raw)
    assert filter2D(out, kernel).shape == (2, 3, 20, 24)


def test_resume_redirects_saved_networks_and_keeps_a_frozen_networks_ema_key(tmp_path):
    """A resumed run loads each saved network's raw weights; a frozen network that was never saved (IQPIR's stage-I
    network_vqgan) keeps its path and its 'params_ema' key (rewriting it loaded the non-EMA stage I after a resume)."""
    models = tmp_path / 'models'
    models.mkdir()
    (models / 'net_g_7.pth').write_bytes(b'x')
    opt = {'network_g': {}, 'network_vqgan': {}, 'network_d': {},
           'path': {'models': str(models), 'pretrain_network_g': None, 'param_key_g': 'params_ema',
                    'pretrain_network_vqgan': '/stage1.pth', 'param_key_vqgan': 'params_ema'}}
    basicsr_patches.redirect_pretrain_paths(opt, 7)
    assert opt['path']['pretrain_network_g'] == str(models / 'net_g_7.pth') and opt['path']['param_key_g'] == 'params'
    assert opt['path']['pretrain_network_vqgan'] == '/stage1.pth' and opt['path']['param_key_vqgan'] == 'params_ema'
    assert 'pretrain_network_d' not in opt['path']
