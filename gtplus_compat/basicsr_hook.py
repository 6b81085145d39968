"""Let basicsr's own entry points (``basicsr/train.py``, ``python -m basicsr.train``, ``-m basicsr.test``) find
gtplus types, without editing basicsr and without importing torch or basicsr at interpreter start.

basicsr builds everything through its registries (``ARCH_REGISTRY.get(opt['type'])`` and so on), but nothing in
its entry points imports gtplus, so a YAML naming ``GTPlusNAFNet`` failed with "No object named ... found". The
installed ``gtplus_compat.pth`` calls :func:`install_basicsr_hook` at interpreter start. That only puts a finder
at the front of ``sys.meta_path``, which compares one module name per import and otherwise does nothing. When
``basicsr.utils.registry`` is imported, the finder lets the normal loader run it, then wraps four methods of its
``Registry`` class (``get``, ``__contains__``, ``__iter__``, ``keys``). The first call to any of them, on any
registry, puts basicsr's methods back and imports ``gtplus_arch``, ``gtplus_data`` and ``gtplus_models``, which
register every gtplus type and apply the :mod:`gtplus_compat.basicsr_patches` fixes; the call then goes on to
whatever the method is now (gtplus replaces ``Registry.get`` with a lookup that names the closest names).

Why at the first lookup and not at ``import basicsr``: a script that imports basicsr without building anything from
a registry pays nothing, and a broken gtplus install cannot break ``import basicsr`` itself. The cost is that
basicsr code running before the first lookup (``parse_options``, ``load_resume_state``) is basicsr's unpatched
code.

Set ``GTPLUS_NO_BASICSR_HOOK=1`` to turn the hook off (checked at interpreter start and again when the registry is
imported); then basicsr sees gtplus types only in processes that import a gtplus package themselves.

If importing gtplus fails inside the hook, that exception propagates from the registry call that triggered it,
with a note naming the hook and the variable, and the hook is not tried again (a second attempt would fail on
basicsr's duplicate-name assertion, which would hide the real error).
"""
import importlib
import os
import sys

REGISTRY_MODULE = 'basicsr.utils.registry'
DISABLE_VARIABLE = 'GTPLUS_NO_BASICSR_HOOK'
# The packages whose import registers every gtplus type (arch first: data and models build on it).
GTPLUS_PACKAGES = ('gtplus_arch', 'gtplus_data', 'gtplus_models')
# The Registry methods that look names up. ``register``/``_do_register`` are left alone: gtplus registering its
# own types must not trigger the import of gtplus.
LOOKUP_METHODS = ('get', '__contains__', '__iter__', 'keys')

# Process-wide hook state. 'loading' is set before gtplus is imported, so the hook runs at most once per process.
_STATE = {'wrapped': None, 'loading': False, 'lock': None}


def hook_disabled():
    """Whether ``GTPLUS_NO_BASICSR_HOOK`` is set to anything but an empty string, 0, false, no or off."""
    return os.environ.get(DISABLE_VARIABLE, '').strip().lower() not in ('', '0', 'false', 'no', 'off')


class _RestoringLoader:
    """Runs the real loader of ``basicsr.utils.registry``, then calls ``on_loaded(module)``.

    Before running the module it puts the real loader back on the module and its spec, so the loaded module looks
    exactly as if this wrapper had never existed (tracebacks, ``inspect``, ``importlib.reload``).
    """

    def __init__(self, loader, on_loaded):
        self._loader = loader
        self._on_loaded = on_loaded

    def create_module(self, spec):
        create = getattr(self._loader, 'create_module', None)
        return create(spec) if create is not None else None  # None: the default module creation

    def exec_module(self, module):
        module.__loader__ = self._loader
        if getattr(module, '__spec__', None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._on_loaded(module)

    def __getattr__(self, name):
        # get_source, get_filename, is_package, ... of the real loader, for anything that asks before exec_module.
        return getattr(self._loader, name)


class _BasicsrRegistryFinder:
    """Answers only for ``basicsr.utils.registry``, with the spec the other finders give and a wrapping loader.

    It sits first in ``sys.meta_path`` (to see the import before the path finder loads it) and costs one string
    comparison for every other import. Like the loader above, it is a plain class rather than an ``importlib.abc``
    subclass: the import system needs only the methods, and ``importlib.abc`` (which imports importlib.resources)
    would cost more interpreter start-up time than everything else gtplus_compat.pth does.
    """

    def __init__(self):
        self._searching = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != REGISTRY_MODULE or self._searching:
            return None
        self._searching = True
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, 'find_spec'):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        spec.loader = _RestoringLoader(spec.loader, _on_registry_loaded)
        return spec


def _on_registry_loaded(module):
    registry_class = getattr(module, 'Registry', None)
    if registry_class is not None and not hook_disabled():
        wrap_registry(registry_class)


def _make_lookup(registry_class, name, original):
    """A stand-in for ``registry_class.<name>`` that imports gtplus on first use, then calls the real method."""

    def lookup(self, *args, **kwargs):
        # Called through the class (the hook is live): after gtplus is imported, call the method as it is *now*
        # (gtplus's own ``get``). Called through a reference kept elsewhere after the method was replaced (e.g.
        # basicsr_patches.ORIGINALS, which remembers what it replaced): behave as the method this one wraps.
        live = registry_class.__dict__.get(name) is lookup
        import_gtplus()
        target = getattr(registry_class, name) if live else original
        return target(self, *args, **kwargs)

    lookup.__name__ = getattr(original, '__name__', name)
    lookup.__qualname__ = getattr(original, '__qualname__', name)
    lookup.__doc__ = getattr(original, '__doc__', None)
    lookup.__wrapped__ = original
    lookup._gtplus_basicsr_hook = True
    return lookup


def _is_hook_lookup(function):
    return getattr(function, '_gtplus_basicsr_hook', False)


def wrap_registry(registry_class):
    """Make the first lookup on any ``registry_class`` instance import gtplus (idempotent).

    Methods already wrapped are left as they are, so this also re-arms a method that something replaced in the
    meantime: ``gtplus_compat.apply_all`` calls it after ``patch_registry_lookup`` replaced ``get``, so that a
    process that imported only ``gtplus_arch`` still finds gtplus models. It does nothing once the hook has run.

    Args:
        registry_class (type): basicsr's ``Registry`` class.

    Returns:
        bool: True if at least one method was wrapped by this call.
    """
    if _STATE['loading'] or hook_disabled():
        return False
    if _STATE['lock'] is None:
        import threading  # here, not at module level: the .pth path must stay free of imports it does not need
        _STATE['lock'] = threading.RLock()
    changed = False
    for name in LOOKUP_METHODS:
        current = registry_class.__dict__.get(name)
        if current is None or _is_hook_lookup(current):
            continue
        setattr(registry_class, name, _make_lookup(registry_class, name, current))
        changed = True
    _STATE['wrapped'] = registry_class
    return changed


def unwrap_registry(registry_class=None):
    """Put back every method the hook wrapped on ``registry_class`` (default: the one it wrapped); idempotent.

    A method replaced after it was wrapped (gtplus's ``get``) is kept: it is what the class should have now.

    Returns:
        bool: True if at least one method was put back.
    """
    registry_class = registry_class or _STATE['wrapped']
    if registry_class is None:
        return False
    changed = False
    for name in LOOKUP_METHODS:
        current = registry_class.__dict__.get(name)
        if not _is_hook_lookup(current):
            continue
        while _is_hook_lookup(current):  # wrapped twice if re-armed over an earlier stand-in
            current = current.__wrapped__
        setattr(registry_class, name, current)
        changed = True
    return changed


def import_gtplus():
    """Unwrap the registry, then import the gtplus packages (at most once per process; thread-safe).

    The methods are put back *before* the import, so lookups made while gtplus imports basicsr and registers its
    types reach basicsr's own methods and cannot recurse, and ``basicsr_patches.ORIGINALS`` records basicsr's
    ``Registry.get``, not this hook's stand-in.
    """
    lock = _STATE['lock']
    # Checked before taking the lock too: another thread that is importing a gtplus package and looks a name up
    # meanwhile must not wait for this lock while this thread waits for that package's import lock.
    if lock is None or _STATE['loading']:
        return
    with lock:
        if _STATE['loading']:
            return
        _STATE['loading'] = True
        unwrap_registry()
        try:
            for package in GTPLUS_PACKAGES:
                importlib.import_module(package)
        except BaseException as error:
            if hasattr(error, 'add_note'):  # Python 3.11+
                error.add_note(f'(raised while gtplus_compat.basicsr_hook imported {package} at the first basicsr '
                               f'registry lookup; set {DISABLE_VARIABLE}=1 to turn the hook off)')
            raise


def rearm_basicsr_hook():
    """Wrap again whatever lookup methods were replaced since the hook wrapped the registry (see wrap_registry).

    Does nothing unless the hook is waiting for its first lookup.

    Returns:
        bool: True if a method was wrapped again.
    """
    registry_class = _STATE['wrapped']
    return registry_class is not None and wrap_registry(registry_class)


def hook_state():
    """``'off'`` (not installed), ``'armed'`` (waiting for the first lookup) or ``'done'`` (gtplus imported)."""
    if _STATE['loading']:
        return 'done'
    if _STATE['wrapped'] is not None or any(isinstance(f, _BasicsrRegistryFinder) for f in sys.meta_path):
        return 'armed'
    return 'off'


def install_basicsr_hook():
    """Install the finder first in ``sys.meta_path`` (idempotent; cheap enough for a ``.pth`` file).

    If ``basicsr.utils.registry`` is already imported, its ``Registry`` is wrapped at once instead. Does nothing when
    ``GTPLUS_NO_BASICSR_HOOK`` is set.

    Returns:
        bool: True if this call installed the finder or wrapped the registry.
    """
    if hook_disabled() or _STATE['loading']:
        return False
    registry = sys.modules.get(REGISTRY_MODULE)
    if registry is not None:
        registry_class = getattr(registry, 'Registry', None)
        return registry_class is not None and wrap_registry(registry_class)
    if any(isinstance(finder, _BasicsrRegistryFinder) for finder in sys.meta_path):
        return False
    sys.meta_path.insert(0, _BasicsrRegistryFinder())
    return True


def uninstall_basicsr_hook():
    """Remove the finder, unwrap the registry and forget that the hook ran, so it can be installed again (tests).

    Returns:
        bool: True if anything was removed or put back.
    """
    finders = [finder for finder in sys.meta_path if isinstance(finder, _BasicsrRegistryFinder)]
    for finder in finders:
        sys.meta_path.remove(finder)
    unwrapped = unwrap_registry()
    _STATE.update(wrapped=None, loading=False)
    return bool(finders) or unwrapped
