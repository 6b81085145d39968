"""basicsr's own entry points (``python -m basicsr.train``/``basicsr.test``, ``python basicsr/train.py`` in a checkout)
find gtplus types through the registry hook that the installed ``gtplus_compat.pth`` installs, and interpreter start
stays light (no torch, no basicsr).

basicsr's ``-m`` entry points write ``experiments/`` and ``results/`` beside the installed ``basicsr`` package, i.e.
into site-packages: those tests use a unique experiment name and remove exactly what they created.
"""
import contextlib
import glob
import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import uuid

import pytest

from conftest import REPO, make_paired_pngs, python_exe, sr_train_options, write_yaml
from gtplus_compat import basicsr_hook

TINY_NAFNET = {'type': 'GTPlusNAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
               'dec_blk_nums': [1, 1]}
TOTAL_ITER = 4
NOT_FOUND = "No object named 'GTPlusNAFNet' found in 'arch' registry!"


@pytest.fixture(scope='module', autouse=True)
def installed_pth():
    """The site-packages ``gtplus_compat.pth``; the entry-point tests need it to be this checkout's."""
    pth = os.path.join(sysconfig.get_paths()['purelib'], 'gtplus_compat.pth')
    if not os.path.isfile(pth):
        pytest.skip('gtplus is installed in editable mode, which carries no .pth (make test installs it properly)')
    with open(pth) as installed, open(os.path.join(REPO, 'gtplus_compat.pth')) as checkout:
        if installed.read().strip() != checkout.read().strip():
            pytest.fail(f'{pth} differs from the checkout gtplus_compat.pth: reinstall gtplus (make setup)')
    return pth


def run(args, cwd, env_extra=None, timeout=300):
    env = {key: value for key, value in os.environ.items() if key != basicsr_hook.DISABLE_VARIABLE}
    env.update(env_extra or {})
    return subprocess.run([python_exe()] + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def check(proc):
    assert proc.returncode == 0, f'stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}'
    return proc


def basicsr_root():
    """Where basicsr's train.py/test.py put experiments/ and results/ when run with -m: the folder above basicsr."""
    return os.path.dirname(os.path.dirname(importlib.util.find_spec('basicsr').origin))


@contextlib.contextmanager
def outputs_removed(root, name):
    """Remove ``root/{experiments,results,tb_logger}/name*`` afterwards, and each of those folders if this made it."""
    tops = [os.path.join(root, top) for top in ('experiments', 'results', 'tb_logger')]
    existed = {top: os.path.isdir(top) for top in tops}
    try:
        yield
    finally:
        for top in tops:
            for path in glob.glob(os.path.join(top, name)) + glob.glob(os.path.join(top, f'{name}_archived_*')):
                shutil.rmtree(path)
            if not existed[top] and os.path.isdir(top) and not os.listdir(top):
                os.rmdir(top)


def train_options(data_root, name):
    gt_dir, lq_dir = make_paired_pngs(str(data_root), scale=1)
    opt = sr_train_options(gt_dir, lq_dir, TINY_NAFNET, scale=1, name=name, total_iter=TOTAL_ITER)
    opt['logger']['save_checkpoint_freq'] = TOTAL_ITER
    return opt


START_PROBE = ('import sys, json; print(json.dumps({"torch": "torch" in sys.modules, "basicsr": "basicsr" in '
               'sys.modules, "finders": [type(f).__name__ for f in sys.meta_path], '
               '"gtplus_compat": sys.modules["gtplus_compat"].__file__}))')


def test_interpreter_start_imports_neither_torch_nor_basicsr():
    start = json.loads(check(run(['-c', START_PROBE], cwd=REPO)).stdout)
    assert (start['torch'], start['basicsr']) == (False, False)
    assert start['finders'][0] == '_BasicsrRegistryFinder'
    assert '_FunctionalTensorAliasFinder' in start['finders']
    # the checkout's gtplus_compat ran the .pth (conftest puts the checkout on PYTHONPATH)
    assert os.path.dirname(start['gtplus_compat']) == os.path.join(REPO, 'gtplus_compat')
    disabled = json.loads(check(run(['-c', START_PROBE], cwd=REPO, env_extra={
        basicsr_hook.DISABLE_VARIABLE: '1'})).stdout)
    assert '_BasicsrRegistryFinder' not in disabled['finders']
    assert '_FunctionalTensorAliasFinder' in disabled['finders']


def gtplus_names(registries):
    """{registry name: sorted names registered by gtplus packages}."""
    prefixes = tuple(f'{package}.' for package in basicsr_hook.GTPLUS_PACKAGES)
    return {reg._name: sorted(name for name, obj in reg if getattr(obj, '__module__', '').startswith(prefixes))
            for reg in registries}


def test_first_lookup_registers_every_gtplus_type():
    """One ``in`` on a fresh interpreter's ARCH_REGISTRY registers what importing the three packages registers."""
    code = textwrap.dedent('''
        import json, sys
        from basicsr.utils import registry as r
        assert 'gtplus_arch' not in sys.modules
        assert 'GTPlusNAFNet' in r.ARCH_REGISTRY
        regs = [r.ARCH_REGISTRY, r.DATASET_REGISTRY, r.MODEL_REGISTRY, r.LOSS_REGISTRY, r.METRIC_REGISTRY]
        prefixes = ('gtplus_arch.', 'gtplus_data.', 'gtplus_models.')
        print(json.dumps({reg._name: sorted(n for n, o in reg if getattr(o, '__module__', '').startswith(prefixes))
                          for reg in regs}))
    ''')
    hooked = json.loads(check(run(['-c', code], cwd=REPO)).stdout.strip().splitlines()[-1])
    import gtplus_arch  # noqa: F401
    import gtplus_data  # noqa: F401
    import gtplus_models  # noqa: F401
    from basicsr.utils import registry as r
    explicit = gtplus_names([r.ARCH_REGISTRY, r.DATASET_REGISTRY, r.MODEL_REGISTRY, r.LOSS_REGISTRY,
                             r.METRIC_REGISTRY])
    assert hooked == explicit
    assert all(hooked.values()), hooked  # every registry holds some gtplus type


@pytest.fixture(scope='module')
def trained_with_python_m(tmp_path_factory):
    """``python -m basicsr.train`` on a GTPlusNAFNet option file; its outputs are removed after the module."""
    tmp = tmp_path_factory.mktemp('python_m')
    name = f'gtplus_hook_{uuid.uuid4().hex[:8]}'
    root = basicsr_root()
    opt_file = write_yaml(tmp / 'train.yml', train_options(tmp / 'data', name))
    with outputs_removed(root, name):
        proc = run(['-m', 'basicsr.train', '-opt', opt_file], cwd=tmp)
        yield proc, root, name, tmp


def test_python_m_basicsr_train(trained_with_python_m):
    proc, root, name, _ = trained_with_python_m
    check(proc)
    models = os.path.join(root, 'experiments', name, 'models')
    assert sorted(os.listdir(models)) == [f'net_g_{TOTAL_ITER}.pth', 'net_g_latest.pth']
    log = glob.glob(os.path.join(root, 'experiments', name, 'train_*.log'))
    with open(log[0]) as f:
        assert 'Network [GTPlusNAFNet] is created.' in f.read()


def test_python_m_basicsr_train_writes_exact_resume_entries(trained_with_python_m):
    """basicsr's loop runs as ``__main__`` with class names bound before gtplus was imported; the prefetcher is
    patched in place, so its training states still carry the loader position and random states."""
    import torch
    from gtplus_compat import exact_resume
    proc, root, name, _ = trained_with_python_m
    check(proc)
    state = torch.load(os.path.join(root, 'experiments', name, 'training_states', f'{TOTAL_ITER}.state'),
                       weights_only=True)
    entry = state[exact_resume.STATE_KEY]
    # 4 images in batches of 2: iteration 4 is the end of epoch 1, both of its batches used.
    assert (state['epoch'], entry['batches'], entry['batches_per_epoch']) == (1, 2, 2)


def test_python_m_basicsr_test(trained_with_python_m):
    train_proc, root, train_name, tmp = trained_with_python_m
    check(train_proc)
    name = f'{train_name}_test'
    opt = train_options(tmp / 'data', name)
    opt['datasets'] = {'test_1': opt['datasets']['val']}
    opt['path']['pretrain_network_g'] = os.path.join(root, 'experiments', train_name, 'models', 'net_g_latest.pth')
    opt['val'].update(save_img=True, suffix=None)  # basicsr's test.py reads val.suffix when saving images
    for key in ['train', 'logger']:
        opt.pop(key)
    opt_file = write_yaml(tmp / 'test.yml', opt)
    with outputs_removed(root, name):
        check(run(['-m', 'basicsr.test', '-opt', opt_file], cwd=tmp))
        saved = glob.glob(os.path.join(root, 'results', name, 'visualization', 'toy_val', '*.png'))
        assert len(saved) == 4


def checkout_train_script(tmp_path):
    """A BasicSR-checkout layout: ``tmp_path/checkout/basicsr/train.py``, a copy of the installed one."""
    script = tmp_path / 'checkout' / 'basicsr' / 'train.py'
    script.parent.mkdir(parents=True)
    shutil.copy(os.path.join(basicsr_root(), 'basicsr', 'train.py'), script)
    return script


def test_checkout_train_py(tmp_path):
    script = checkout_train_script(tmp_path)
    opt_file = write_yaml(tmp_path / 'train.yml', train_options(tmp_path / 'data', 'toy_checkout'))
    check(run([script, '-opt', opt_file], cwd=tmp_path))
    models = tmp_path / 'checkout' / 'experiments' / 'toy_checkout' / 'models'
    assert (models / f'net_g_{TOTAL_ITER}.pth').is_file()


def test_disabled_hook_gives_basicsr_not_found(tmp_path):
    """With the variable set, basicsr fails as it did before the hook: the hook is what makes the others pass."""
    script = checkout_train_script(tmp_path)
    opt_file = write_yaml(tmp_path / 'train.yml', train_options(tmp_path / 'data', 'toy_disabled'))
    proc = run([script, '-opt', opt_file], cwd=tmp_path, env_extra={basicsr_hook.DISABLE_VARIABLE: '1'})
    assert proc.returncode != 0
    assert NOT_FOUND in proc.stderr, proc.stderr[-3000:]


def test_failing_gtplus_import_shows_the_real_error(tmp_path):
    """A gtplus package that fails to import surfaces as its own error, not as 'not found in registry'."""
    (tmp_path / 'gtplus_data').mkdir()
    (tmp_path / 'gtplus_data' / '__init__.py').write_text('raise RuntimeError("broken gtplus_data for the test")\n')
    code = 'from basicsr.utils.registry import ARCH_REGISTRY; ARCH_REGISTRY.get("GTPlusNAFNet")'
    env = {'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ['PYTHONPATH']])}
    proc = run(['-c', code], cwd=tmp_path, env_extra=env)
    assert proc.returncode != 0
    assert 'RuntimeError: broken gtplus_data for the test' in proc.stderr
    assert basicsr_hook.DISABLE_VARIABLE in proc.stderr  # the note says where the error came from
    assert 'No object named' not in proc.stderr


# In-process tests of the hook itself, on a fresh copy of basicsr.utils.registry (its own Registry class), so the
# registries the rest of the test session uses are never touched.

PLUGIN = '''
import basicsr.utils.registry as registry  # the fresh copy under test

registry.EVENTS.append('import')
{body}
assert 'early' not in registry.TOY  # a lookup while the plugin imports reaches basicsr's method: no recursion


class ToyNet:
    pass


registry.TOY.register(ToyNet)
get_before = registry.Registry.get


def get(self, name, suffix='basicsr'):
    """Stands in for gtplus's patch_registry_lookup, which replaces Registry.get during the import."""
    registry.EVENTS.append('get ' + name)
    return get_before(self, name, suffix)


registry.Registry.get = get
'''


@pytest.fixture
def fresh_registry(monkeypatch, tmp_path):
    """Returns ``load(plugin_body='')``: writes a plugin module standing in for the gtplus packages, then imports a
    fresh ``basicsr.utils.registry`` (through the finder when it is installed) with ``EVENTS`` and a ``TOY``
    registry. The hook's state, ``sys.meta_path`` and basicsr's registry module are restored afterwards."""
    import basicsr.utils
    monkeypatch.delenv(basicsr_hook.DISABLE_VARIABLE, raising=False)
    monkeypatch.setattr(basicsr_hook, '_STATE', {'wrapped': None, 'loading': False, 'lock': None})
    monkeypatch.setattr(sys, 'meta_path', [f for f in sys.meta_path
                                           if not isinstance(f, basicsr_hook._BasicsrRegistryFinder)])
    monkeypatch.setattr(basicsr.utils, 'registry', basicsr.utils.registry)
    monkeypatch.delitem(sys.modules, basicsr_hook.REGISTRY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = f'toy_plugin_{uuid.uuid4().hex[:8]}'
    monkeypatch.setattr(basicsr_hook, 'GTPLUS_PACKAGES', (plugin,))

    def load(plugin_body=''):
        (tmp_path / f'{plugin}.py').write_text(PLUGIN.format(body=plugin_body))
        module = importlib.import_module(basicsr_hook.REGISTRY_MODULE)
        module.EVENTS = []
        module.TOY = module.Registry('toy')
        return module

    yield load
    sys.modules.pop(plugin, None)


def hook_lookups(registry_class):
    return [name for name in basicsr_hook.LOOKUP_METHODS
            if getattr(registry_class.__dict__[name], '_gtplus_basicsr_hook', False)]


def test_install_is_idempotent_and_first_lookup_imports_once(fresh_registry):
    assert basicsr_hook.hook_state() == 'off'
    assert basicsr_hook.install_basicsr_hook() is True
    assert basicsr_hook.install_basicsr_hook() is False
    assert isinstance(sys.meta_path[0], basicsr_hook._BasicsrRegistryFinder)
    assert sum(isinstance(f, basicsr_hook._BasicsrRegistryFinder) for f in sys.meta_path) == 1
    registry = fresh_registry()
    assert type(registry.__loader__).__name__ == 'SourceFileLoader'  # the module looks as if never hooked
    assert registry.__spec__.loader is registry.__loader__
    cls = registry.Registry
    assert hook_lookups(cls) == list(basicsr_hook.LOOKUP_METHODS)
    basicsr_methods = {name: cls.__dict__[name].__wrapped__ for name in basicsr_hook.LOOKUP_METHODS}
    assert basicsr_hook.hook_state() == 'armed' and registry.EVENTS == []  # registering imports nothing

    assert registry.TOY.get('ToyNet').__name__ == 'ToyNet'
    # the plugin was imported, then the call went on to the get the plugin installed
    assert registry.EVENTS == ['import', 'get ToyNet']
    assert hook_lookups(cls) == [] and basicsr_hook.hook_state() == 'done'
    assert cls.get is not basicsr_methods['get']  # the plugin's get is kept
    for name in ('__contains__', '__iter__', 'keys'):
        assert cls.__dict__[name] is basicsr_methods[name]  # basicsr's own methods are back
    assert 'ToyNet' in registry.TOY and registry.EVENTS.count('import') == 1
    assert basicsr_hook.install_basicsr_hook() is False  # nothing to do once the hook has run


@pytest.mark.parametrize('first_lookup', [lambda r: 'ToyNet' in r, lambda r: list(r.keys()), lambda r: list(r)])
def test_every_lookup_method_triggers_the_import(fresh_registry, first_lookup):
    basicsr_hook.install_basicsr_hook()
    registry = fresh_registry()
    first_lookup(registry.TOY)
    assert registry.EVENTS == ['import'] and 'ToyNet' in registry.TOY.keys()


def test_hook_wraps_an_already_imported_registry_and_uninstalls(fresh_registry):
    registry = fresh_registry()  # imported before the hook exists
    assert hook_lookups(registry.Registry) == []
    assert basicsr_hook.install_basicsr_hook() is True
    assert hook_lookups(registry.Registry) == list(basicsr_hook.LOOKUP_METHODS)
    assert basicsr_hook.uninstall_basicsr_hook() is True
    assert hook_lookups(registry.Registry) == [] and basicsr_hook.hook_state() == 'off'
    assert 'ToyNet' not in registry.TOY and registry.EVENTS == []


def test_rearm_after_get_is_replaced(fresh_registry):
    """As when gtplus_arch is imported first: patch_registry_lookup replaces get before any lookup."""
    basicsr_hook.install_basicsr_hook()
    registry = fresh_registry()
    cls = registry.Registry
    stale = cls.get  # what basicsr_patches.ORIGINALS would remember: the hook's stand-in
    replaced = []

    def patched_get(self, name, suffix='basicsr'):
        replaced.append(name)
        return stale.__wrapped__(self, name, suffix)

    cls.get = patched_get
    assert basicsr_hook.rearm_basicsr_hook() is True
    assert basicsr_hook.rearm_basicsr_hook() is False
    assert registry.TOY.get('ToyNet').__name__ == 'ToyNet'
    assert registry.EVENTS == ['import', 'get ToyNet'] and replaced == ['ToyNet']
    # the stale stand-in now behaves as basicsr's own get, as an "original" should
    del registry.EVENTS[:], replaced[:]
    assert stale(registry.TOY, 'ToyNet').__name__ == 'ToyNet'
    assert registry.EVENTS == [] and replaced == []


def test_failed_import_raises_the_real_error_once(fresh_registry):
    basicsr_hook.install_basicsr_hook()
    registry = fresh_registry('raise RuntimeError("plugin is broken")')
    with pytest.raises(RuntimeError, match='plugin is broken') as error:
        registry.TOY.get('ToyNet')
    if sys.version_info >= (3, 11):
        assert basicsr_hook.DISABLE_VARIABLE in ''.join(error.value.__notes__)
    assert hook_lookups(registry.Registry) == []
    # not retried: a second import would stumble on names the first attempt registered, hiding the real error
    with pytest.raises(KeyError, match='ToyNet'):
        registry.TOY.get('ToyNet')
    assert registry.EVENTS == ['import']


def test_disable_variable(fresh_registry, monkeypatch):
    monkeypatch.setenv(basicsr_hook.DISABLE_VARIABLE, '1')
    assert basicsr_hook.install_basicsr_hook() is False
    assert not any(isinstance(f, basicsr_hook._BasicsrRegistryFinder) for f in sys.meta_path)
    monkeypatch.setenv(basicsr_hook.DISABLE_VARIABLE, '0')  # 0 means "not disabled"
    assert basicsr_hook.install_basicsr_hook() is True
    monkeypatch.setenv(basicsr_hook.DISABLE_VARIABLE, 'yes')  # also checked when the registry is imported
    registry = fresh_registry()
    assert hook_lookups(registry.Registry) == []
