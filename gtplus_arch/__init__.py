"""gtplus_arch: pure nn.Modules and tensor maths, registered in basicsr's ARCH_REGISTRY on import.

No file I/O, no pyiqa, no YAML here.
"""
import gtplus_compat

gtplus_compat.apply_all()

# Every *_arch.py registers its networks, as basicsr.archs does for its own folder.
_arch_modules = gtplus_compat.import_registering_modules(__name__, __file__, ('_arch.py', ))
