"""The package layout: imports point down (commands -> tools / quickstart -> models -> data -> arch -> compat), no
module imports another in a cycle, and each room holds what its name says."""
import ast
import os
import os.path as osp

import pytest

from conftest import REPO

PACKAGES = ('gtplus_compat', 'gtplus_arch', 'gtplus_data', 'gtplus_models')
# Lower numbers sit lower. A module may import its own layer or any lower one, never a higher one. Package
# __init__ files are left out of the rule: importing a package is how its modules register.
LAYERS = (
    ('gtplus_compat', 0),
    ('gtplus_arch', 1),
    ('gtplus_data', 2),
    ('gtplus_models.quality', 3),
    ('gtplus_models', 4),  # models, losses, metrics, checkpoints, options, the train/test entry points
    ('gtplus_models.tools', 5),
    ('gtplus_models.quickstart', 6),
    ('gtplus_models.commands', 7),
    ('gtplus_models.cli', 7),
)


def module_files():
    """{module name: path} of every gtplus module in the checkout."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(osp.join(REPO, package)):
            for name in files:
                if name.endswith('.py'):
                    rel = osp.relpath(osp.join(folder, name), REPO)[:-3].replace(os.sep, '.')
                    found[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = osp.join(folder, name)
    return found


def imported_modules(path, module, known):
    """gtplus modules imported anywhere in a file (top level and inside functions), resolved to module names."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    targets = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg.
            names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in known else node.module
                     for a in node.names]
        targets.update(n for n in names if n in known and n != module)
    return targets


def layer(module):
    best = None
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + '.'):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, level)
    return best[1]


@pytest.fixture(scope='module')
def graph():
    files = module_files()
    return {module: imported_modules(path, module, files) for module, path in files.items()}


def package_modules():
    """Module names that are packages (their file is an __init__.py)."""
    return {module for module, path in module_files().items() if path.endswith('__init__.py')}


def test_imports_point_down(graph):
    packages = package_modules()
    upward = [f'{module} (layer {layer(module)}) imports {target} (layer {layer(target)})'
              for module, targets in graph.items() if module not in packages
              for target in targets if layer(target) > layer(module)]
    assert not upward, '\n'.join(upward)


def test_layer_rule_catches_an_upward_import():
    assert layer('gtplus_models.tools.refine') > layer('gtplus_models.ornet_model') > layer('gtplus_data.image_util')
    assert layer('gtplus_models.quality.metric') < layer('gtplus_models.quality_loss')


def strongly_connected(graph):
    """Tarjan's strongly connected components of a {node: set(nodes)} graph."""
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_no_import_cycle(graph):
    # Package __init__ files import their own modules to register them; those edges are the registration
    # mechanism, not dependencies, so only module-to-module edges count.
    packages = package_modules()
    modules = {m: {t for t in targets if t not in packages} for m, targets in graph.items() if m not in packages}
    cycles = [sorted(c) for c in strongly_connected(modules) if len(c) > 1]
    assert not cycles, f'import cycles: {cycles}'


def test_cycle_detector_finds_a_cycle():
    found = strongly_connected({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}})
    assert sorted(map(sorted, found))[0] == ['a', 'b', 'c']


def test_compat_holds_only_basicsr_fixes():
    import gtplus_compat
    public = {name for name in vars(gtplus_compat) if not name.startswith('_')}
    assert 'import_registering_modules' not in public
    from gtplus_compat import basicsr_patches
    patches = [name for name in vars(basicsr_patches) if name.startswith('patch_')]
    assert len(patches) >= 8  # every entry of the README's fix table


def test_commands_are_thin():
    """A command module parses and calls tools: it defines no engine of its own (at most a few tiny parsers)."""
    folder = osp.join(REPO, 'gtplus_models', 'commands')
    for name in os.listdir(folder):
        if not name.endswith('.py') or name.startswith('_'):
            continue
        tree = ast.parse(open(osp.join(folder, name), encoding='utf-8').read())
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert {'add_arguments', 'run'} <= {f.name for f in functions}, name
        for function in functions:
            length = function.end_lineno - function.lineno + 1
            assert length <= 30, f'{name}:{function.name} is {length} lines: move the logic into a tool'


def test_default_cond_has_one_home():
    """The default c (0.3) is written once; everything else imports it."""
    hits = []
    for module, path in module_files().items():
        for number, line in enumerate(open(path, encoding='utf-8'), 1):
            code = line.split('#')[0]
            if 'DEFAULT_COND =' in code or "'cond', 0.3" in code or 'default=0.3' in code or 'cond=0.3' in code:
                hits.append(f'{module}:{number}: {line.strip()}')
    assert len(hits) == 1 and hits[0].startswith('gtplus_arch.ornet_arch'), hits
