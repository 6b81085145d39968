"""Alias ``torchvision.transforms.functional_tensor`` to ``torchvision.transforms.functional``.

torchvision 0.17 removed ``functional_tensor``; basicsr 1.4.2 still imports ``rgb_to_grayscale`` from it in
``basicsr/data/degradations.py``, which ``import basicsr`` reaches. The alias is a lazy import hook: it costs nothing
until something asks for the old module name, so it is safe to install from a ``.pth`` file at interpreter start.
"""
import importlib
import sys

LEGACY_NAME = 'torchvision.transforms.functional_tensor'
MODERN_NAME = 'torchvision.transforms.functional'


class _AliasLoader:
    """Loads the legacy module name as the modern module object itself."""

    def create_module(self, spec):
        return importlib.import_module(MODERN_NAME)

    def exec_module(self, module):
        # The modern module is already executed by import_module; nothing to run.
        pass


class _FunctionalTensorAliasFinder:
    """Answers only for the legacy module name, and only when torchvision lacks a real one.

    A plain class, not an ``importlib.abc`` subclass, and ``importlib.util`` is imported only when the legacy
    name is asked for: the import system needs only ``find_spec``, and importing ``importlib.abc`` (with
    importlib.resources) and ``importlib.util`` (with contextlib) at interpreter start cost about 15 ms per process.
    """

    def find_spec(self, fullname, path=None, target=None):
        # This finder sits last in sys.meta_path, so an old torchvision that still ships the real module is found
        # by the normal path finder first and never reaches here.
        if fullname != LEGACY_NAME:
            return None
        import importlib.util
        return importlib.util.spec_from_loader(fullname, _AliasLoader())


def install_torchvision_alias():
    """Put the alias finder at the end of ``sys.meta_path`` (idempotent).

    Returns:
        bool: True if the finder was added by this call.
    """
    if any(isinstance(finder, _FunctionalTensorAliasFinder) for finder in sys.meta_path):
        return False
    sys.meta_path.append(_FunctionalTensorAliasFinder())
    return True
