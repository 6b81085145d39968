"""Compatibility fixes that let basicsr 1.4.2 run on current torch, torchvision, OpenCV and CPU-only machines.

``apply_all()`` applies every fix; ``gtplus_arch``, ``gtplus_data`` and ``gtplus_models`` call it first thing, so the
fixes are in place before basicsr loads. Nothing in site-packages is edited: each fix replaces one basicsr attribute
at run time, and every fix is idempotent.

Importing this package itself is cheap (no torch, no basicsr), because the installed ``gtplus_compat.pth`` imports
it at interpreter start to install the torchvision alias, so that a plain ``import basicsr`` works too.
"""
from gtplus_compat.torchvision_alias import install_torchvision_alias


def apply_all():
    """Install the torchvision alias, then patch basicsr (importing it). Safe to call repeatedly."""
    install_torchvision_alias()
    from gtplus_compat.basicsr_patches import apply_basicsr_patches
    apply_basicsr_patches()




def import_registering_modules(package_name, package_file, suffixes):
    """Import every module of a package whose file name ends with one of ``suffixes`` (so that it registers).

    Args:
        package_name (str): e.g. 'gtplus_arch'.
        package_file (str): the package's ``__file__``.
        suffixes (tuple[str]): e.g. ('_arch.py',).

    Returns:
        list[module]: the imported modules, in file-name order.
    """
    import importlib
    import os
    folder = os.path.dirname(os.path.abspath(package_file))
    names = sorted(name[:-3] for name in os.listdir(folder) if name.endswith(tuple(suffixes)))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]


__all__ = ['apply_all', 'install_torchvision_alias', 'import_registering_modules']
