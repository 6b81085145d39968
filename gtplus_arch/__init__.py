"""gtplus_arch: pure nn.Modules and tensor maths, registered in basicsr's ARCH_REGISTRY on import.

No file I/O, no pyiqa, no YAML here.
"""
import gtplus_compat

gtplus_compat.apply_all()

# Every *_arch.py registers its networks, as basicsr.archs does for its own folder.
_arch_modules = gtplus_compat.import_registering_modules(__name__, __file__, ('_arch.py', ))

from gtplus_arch.cfmg_arch import CFMG  # noqa: E402
from gtplus_arch.frequency import (amplitude_spectrum_log, frequency_mixup, log_amplitude,  # noqa: E402
                                   masks_from_coefficients, ring_gaussian_basis, spatial_fftshift)
from gtplus_arch.nafnet_arch import GTPlusNAFNet, NAFBlock, NAFUNet  # noqa: E402
from gtplus_arch.ornet_arch import ORNET_PRESETS, ORNet  # noqa: E402
from gtplus_arch.state_dict import normalize_state_dict  # noqa: E402

__all__ = [
    'CFMG', 'GTPlusNAFNet', 'NAFBlock', 'NAFUNet', 'ORNet', 'ORNET_PRESETS', 'amplitude_spectrum_log',
    'frequency_mixup', 'log_amplitude', 'masks_from_coefficients', 'normalize_state_dict', 'ring_gaussian_basis',
    'spatial_fftshift'
]
