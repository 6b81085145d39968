"""gtplus_arch: pure nn.Modules and tensor maths, registered in basicsr's ARCH_REGISTRY on import.

No file I/O, no pyiqa, no YAML here. Images are RGB float tensors in [0,1] at every public boundary.

Where things go:
- a new network: ``<name>_arch.py`` with ``@ARCH_REGISTRY.register()`` on the class (class name = YAML ``type``,
  constructor keywords = YAML keys). Every ``*_arch.py`` here is imported, and so registered, by this file.
- a new degradation synthesizer (HR batch in, LQ batch out, randomness from a ``torch.Generator``): also an
  ``*_arch.py`` here, so that online training (a model's ``feed_data``) and the offline tool share one module.
- shared tensor maths (the ring basis and frequency mixup in ``frequency.py``, colour alignment, state-dict
  normalisation): a plain module here, imported by the archs that need it.
"""
import importlib
import os.path as osp

import gtplus_compat

gtplus_compat.apply_all()

from basicsr.utils import scandir  # noqa: E402

# As basicsr/archs/__init__.py does for its own folder: importing every *_arch.py registers its networks.
_arch_modules = [
    importlib.import_module(f'gtplus_arch.{osp.splitext(name)[0]}')
    for name in sorted(scandir(osp.dirname(osp.abspath(__file__)))) if name.endswith('_arch.py')
]

from gtplus_arch.cfmg_arch import CFMG  # noqa: E402
from gtplus_arch.frequency import (amplitude_spectrum_log, frequency_mixup, log_amplitude,  # noqa: E402
                                   masks_from_coefficients, ring_gaussian_basis, spatial_fftshift)
from gtplus_arch.nafnet_arch import GTPlusNAFNet, NAFBlock, NAFUNet  # noqa: E402
from gtplus_arch.ornet_arch import ORNET_PRESETS, ORNet  # noqa: E402
from gtplus_arch.state_dict import normalize_state_dict, state_dict_mismatch  # noqa: E402
from gtplus_arch.synthesizer_arch import (REALESRGAN_PRESETS, BicubicSynthesizer, DegradationPlan,  # noqa: E402
                                          RealESRGANSynthesizer, Synthesizer,
                                          UndertrainedReconstructionSynthesizer, build_synthesizer)
from gtplus_arch.vqvae_arch import VQVAE, VQVAE2  # noqa: E402

__all__ = [
    'BicubicSynthesizer', 'CFMG', 'DegradationPlan', 'GTPlusNAFNet', 'NAFBlock', 'NAFUNet', 'ORNet', 'ORNET_PRESETS',
    'REALESRGAN_PRESETS', 'RealESRGANSynthesizer', 'Synthesizer', 'amplitude_spectrum_log', 'build_synthesizer',
    'frequency_mixup', 'log_amplitude', 'masks_from_coefficients', 'normalize_state_dict', 'ring_gaussian_basis',
    'spatial_fftshift', 'state_dict_mismatch', 'UndertrainedReconstructionSynthesizer', 'VQVAE', 'VQVAE2'
]
