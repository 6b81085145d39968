"""Compatibility fixes that let basicsr 1.4.2 run on current torch, torchvision, OpenCV and CPU-only machines.

``apply_all()`` applies every fix; ``gtplus_arch``, ``gtplus_data`` and ``gtplus_models`` call it first thing, so the
fixes are in place before basicsr loads. Nothing in site-packages is edited: each fix replaces one basicsr attribute
at run time, and every fix is idempotent.

Importing this package itself is cheap (no torch, no basicsr), because the installed ``gtplus_compat.pth`` imports
it at interpreter start to install two import hooks: the torchvision alias, so that a plain ``import basicsr``
works, and the basicsr registry hook (:mod:`gtplus_compat.basicsr_hook`), so that basicsr's own ``train.py`` and
``test.py`` find gtplus types (``GTPLUS_NO_BASICSR_HOOK=1`` turns it off).
"""
from gtplus_compat.basicsr_hook import install_basicsr_hook
from gtplus_compat.torchvision_alias import install_torchvision_alias


def apply_all():
    """Install the torchvision alias, then patch basicsr (importing it). Safe to call repeatedly."""
    install_torchvision_alias()
    from gtplus_compat.basicsr_patches import apply_basicsr_patches
    apply_basicsr_patches()
    # patch_registry_lookup replaced Registry.get; if the registry hook is still waiting for its first lookup (a
    # process that imported only some gtplus packages), wrap the new get too, so gtplus models are still found.
    from gtplus_compat.basicsr_hook import rearm_basicsr_hook
    rearm_basicsr_hook()


__all__ = ['apply_all', 'install_basicsr_hook', 'install_torchvision_alias']
