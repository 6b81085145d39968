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


__all__ = ['apply_all', 'install_torchvision_alias']
