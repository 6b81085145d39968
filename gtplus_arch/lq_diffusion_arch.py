"""The LQ-domain DDPM of METHODS.md §4: a diffusers ``UNet2DModel`` that predicts the noise of noisy LQ images,
its noise schedule from a YAML block, and the low-timestep sampler the paper trains with.

The network is diffusers' own ``UNet2DModel``, built from diffusers' own config names (so a YAML ``network_g``
block reads like a diffusers ``config.json``) or loaded from a local diffusers folder, so that the official
released LQ-DDPM folders (diffusers pipeline folders with ``unet/`` and ``scheduler/``) and the folders
:meth:`LQDiffusionUNet.save_pretrained` writes load as they are. Loading is local only: a missing or incomplete
folder is one line naming what is missing, checked here before diffusers is called.

Value ranges: the DDPM works on the [-1,1] scale, as diffusers' pipelines do; callers with [0,1] images convert
(``2 * x - 1``) and back (``(x + 1) / 2``), as :class:`~gtplus_arch.diffusion_synthesizer_arch.
DiffusionRefinedSynthesizer` does.
"""
import inspect
import json
import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Mapping

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

# diffusers' file names (diffusers.utils.constants CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME and their
# sharded indexes), spelled out so the error message can list them without importing diffusers first.
CONFIG_NAME = 'config.json'
WEIGHT_NAMES = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin',
                'diffusion_pytorch_model.safetensors.index.json', 'diffusion_pytorch_model.bin.index.json')
SCHEDULER_CONFIG_NAME = 'scheduler_config.json'

# The schedulers a YAML block may name. DDPM is the training schedule; the others sample from the same betas.
SCHEDULER_TYPES = ('DDPMScheduler', 'DDIMScheduler', 'UniPCMultistepScheduler', 'DPMSolverMultistepScheduler',
                   'EulerDiscreteScheduler')


def resolve_unet_folder(path):
    """Where the UNet of a local diffusers folder lives, checked before diffusers reads it.

    Args:
        path (str): a ``UNet2DModel`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or
            ``.bin``), or a pipeline folder holding one as ``unet/`` (the official LQ-DDPM releases).

    Returns:
        tuple[str, str | None]: (the folder, the subfolder to pass to ``from_pretrained``: ``'unet'`` or None).

    Raises:
        FileNotFoundError: the folder, its ``config.json`` or its weights are missing (one line naming them).
        ValueError: the config is not a ``UNet2DModel``'s.
    """
    path = osp.expanduser(str(path))
    if not osp.isdir(path):
        what = 'a file, not a folder' if osp.exists(path) else 'no such folder'
        raise FileNotFoundError(f'LQDiffusionUNet pretrained_path {path}: {what}; give a local diffusers folder (a '
                                f'UNet2DModel folder with {CONFIG_NAME} and {WEIGHT_NAMES[0]}, or a pipeline folder '
                                'holding it as unet/)')
    has_config = osp.isfile(osp.join(path, CONFIG_NAME))
    subfolder = 'unet' if not has_config and osp.isdir(osp.join(path, 'unet')) else None
    folder = osp.join(path, subfolder) if subfolder else path
    if not osp.isfile(osp.join(folder, CONFIG_NAME)):
        raise FileNotFoundError(f'LQDiffusionUNet pretrained_path {path}: {CONFIG_NAME} is missing in {folder} (a '
                                'diffusers UNet2DModel folder holds it; a pipeline folder holds it under unet/)')
    if not any(osp.isfile(osp.join(folder, name)) for name in WEIGHT_NAMES):
        raise FileNotFoundError(f'LQDiffusionUNet pretrained_path {path}: no weights in {folder} (looked for '
                                f"{', '.join(WEIGHT_NAMES)})")
    try:
        with open(osp.join(folder, CONFIG_NAME), encoding='utf-8') as f:
            class_name = json.load(f).get('_class_name', 'UNet2DModel')
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f'LQDiffusionUNet pretrained_path {path}: {osp.join(folder, CONFIG_NAME)} is not a JSON '
                         f'object ({err})') from None
    if class_name != 'UNet2DModel':
        raise ValueError(f'LQDiffusionUNet pretrained_path {path}: {osp.join(folder, CONFIG_NAME)} describes a '
                         f'{class_name}, not a UNet2DModel (the unconditional LQ-DDPM)')
    return path, subfolder


def pipeline_scheduler_folder(path):
    """The ``scheduler/`` folder of a diffusers pipeline folder, or None (a bare UNet folder, or no path)."""
    if not path:
        return None
    folder = osp.join(osp.expanduser(str(path)), 'scheduler')
    return folder if osp.isfile(osp.join(folder, SCHEDULER_CONFIG_NAME)) else None


@ARCH_REGISTRY.register()
class LQDiffusionUNet(nn.Module):
    """The ε-prediction network of the LQ-DDPM: diffusers' ``UNet2DModel``, unconditional.

    Args:
        pretrained_path (str | None): a local diffusers folder to load (``UNet2DModel.from_pretrained(...,
            local_files_only=True)``): a UNet folder or a pipeline folder with ``unet/``. Excludes config keys.
        **unet_config: ``UNet2DModel`` config keys, diffusers' own names (sample_size, in_channels, out_channels,
            layers_per_block, block_out_channels, down_block_types, up_block_types, attention_head_dim,
            norm_num_groups, ...). METHODS.md §4: block_out_channels (128, 256, 512, 512), layers_per_block 2,
            attention at level 3, sample_size 256.

    Attributes:
        unet (diffusers.UNet2DModel): the network.
    """

    def __init__(self, pretrained_path=None, **unet_config):
        super().__init__()
        # Imported here, as the pipelines that need it do: importing gtplus_arch stays light without diffusers.
        from diffusers import UNet2DModel

        if pretrained_path is not None and unet_config:
            raise ValueError(f'LQDiffusionUNet: give either pretrained_path ({pretrained_path}) or UNet2DModel config '
                             f"keys ({', '.join(sorted(unet_config))}), not both; the folder's config.json fixes them")
        if pretrained_path is not None:
            path, subfolder = resolve_unet_folder(pretrained_path)
            self.unet = UNet2DModel.from_pretrained(path, subfolder=subfolder, local_files_only=True)
            # from_pretrained returns eval mode; a module starts in training mode (as the config-built one does),
            # and its owner picks the mode. It matters: PyTorch's attention takes another kernel in training mode
            # (outputs differ by ~1e-6).
            self.unet.train(self.training)
        else:
            allowed = set(inspect.signature(UNet2DModel.__init__).parameters) - {'self'}
            unknown = sorted(set(unet_config) - allowed)
            if unknown:
                raise ValueError(f"LQDiffusionUNet: unknown UNet2DModel config key(s) {', '.join(unknown)} (diffusers' "
                                 f"names: {', '.join(sorted(allowed))})")
            # YAML gives lists where diffusers' defaults are tuples; config.json round trips either way.
            self.unet = UNet2DModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in unet_config.items()})
        self.pretrained_path = pretrained_path

    @property
    def size_multiple(self):
        """The UNet's downsampling factor: every down block but the last halves the size, so H and W must be
        multiples of ``2 ** (len(block_out_channels) - 1)``."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def forward(self, x, timesteps):
        """Predict the noise in ``x``.

        Args:
            x (Tensor): [B,C,H,W] noisy LQ images on the [-1,1] scale (C = in_channels, RGB), H and W multiples
                of :attr:`size_multiple`.
            timesteps (Tensor | int): [B] int64 timesteps in [0, num_train_timesteps), or one for the batch.

        Returns:
            Tensor: [B,C,H,W] the predicted noise ε (unit variance scale), x's dtype and device.
        """
        return self.unet(x, timesteps).sample

    def save_pretrained(self, folder, overwrite=False):
        """Write the UNet as a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) that
        ``LQDiffusionUNet(pretrained_path=folder)`` and ``UNet2DModel.from_pretrained(folder)`` load.

        Atomic: written into a temporary sibling folder, then renamed, so an interrupted save never leaves a folder
        that looks complete.

        Args:
            folder (str): the target folder.
            overwrite (bool): replace an existing folder; otherwise an existing one is refused.

        Returns:
            str: ``folder``.
        """
        folder = osp.abspath(osp.expanduser(str(folder)))
        if osp.exists(folder) and not overwrite:
            raise FileExistsError(f'LQDiffusionUNet.save_pretrained: {folder} exists; pass overwrite=True to replace '
                                  'it')
        parent = osp.dirname(folder)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(folder)}.tmp-', dir=parent)
        try:
            self.unet.save_pretrained(tmp, safe_serialization=True)
            if osp.exists(folder):
                # Move the old folder aside first: os.replace cannot put a folder over a non-empty one.
                old = tempfile.mkdtemp(prefix=f'.{osp.basename(folder)}.old-', dir=parent)
                os.replace(folder, osp.join(old, 'folder'))
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        finally:
            if osp.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        return folder


def _scheduler_class(name, key):
    import diffusers

    if name not in SCHEDULER_TYPES:
        raise ValueError(f"{key}: unknown scheduler type {name!r}; one of {', '.join(SCHEDULER_TYPES)}")
    return getattr(diffusers, name)


def check_scheduler_keys(cls, config, key):
    """Refuse config keys that ``cls.__init__`` does not take: diffusers only logs a warning and drops them, so a
    misspelt ``beta_shedule`` would silently train on the default schedule."""
    allowed = set(inspect.signature(cls.__init__).parameters) - {'self'}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"{key}: unknown {cls.__name__} config key(s) {', '.join(unknown)} (its keys: "
                         f"{', '.join(sorted(allowed))})")


def build_noise_scheduler(block, key='noise_scheduler'):
    """A diffusers scheduler from a YAML block.

    Args:
        block (Mapping): ``{type: DDPMScheduler | DDIMScheduler | UniPCMultistepScheduler |
            DPMSolverMultistepScheduler | EulerDiscreteScheduler, **config keys}``, e.g. METHODS.md §4's
            ``{type: DDPMScheduler, num_train_timesteps: 1000, beta_schedule: linear, prediction_type: epsilon}``.
        key (str): the YAML key that held the block, for errors.

    Returns:
        diffusers.SchedulerMixin: the scheduler.

    Raises:
        ValueError: no type, an unknown type or an unknown config key (one line naming it).
    """
    if not isinstance(block, Mapping) or 'type' not in block:
        raise ValueError(f"{key} needs a 'type' key naming a diffusers scheduler ({', '.join(SCHEDULER_TYPES)}), "
                         f'got {block!r}')
    config = dict(block)
    cls = _scheduler_class(config.pop('type'), key)
    check_scheduler_keys(cls, config, key)
    return cls(**{k: tuple(v) if k != 'trained_betas' and isinstance(v, list) else v for k, v in config.items()})


def load_scheduler_folder(folder, key='noise_scheduler'):
    """The scheduler saved in a diffusers ``scheduler/`` folder, built by the class its config names.

    Args:
        folder (str): a folder holding ``scheduler_config.json``.
        key (str): for errors.
    """
    from diffusers import DDPMScheduler

    # Any scheduler class reads the file (they share scheduler_config.json); _class_name then picks the class.
    config = DDPMScheduler.load_config(folder, local_files_only=True)
    cls = _scheduler_class(config.get('_class_name'), f'{key} ({osp.join(folder, SCHEDULER_CONFIG_NAME)})')
    return cls.from_config(config)


def sample_timesteps(batch, max_timestep, generator=None, device='cpu'):
    """Training timesteps, uniform over [0, max_timestep): the paper trains its LQ-DDPM only on low t (t < 250-500
    of T = 1000), the only noise levels the SDEdit refinement ever starts from.

    Args:
        batch (int): how many.
        max_timestep (int): exclusive upper bound, 1 <= max_timestep (<= the scheduler's num_train_timesteps).
        generator (torch.Generator | None): the source of the draws (None: torch's global RNG of ``device``);
            the draws are made on its device and moved to ``device``.
        device (str | torch.device): where the result goes.

    Returns:
        Tensor: [batch] int64 in [0, max_timestep).
    """
    if isinstance(max_timestep, bool) or not isinstance(max_timestep, int) or max_timestep < 1:
        raise ValueError(f'sample_timesteps: max_timestep must be a positive integer, got {max_timestep!r}')
    draw_device = generator.device if generator is not None else torch.device(device)
    t = torch.randint(0, max_timestep, (int(batch), ), generator=generator, device=draw_device, dtype=torch.int64)
    return t.to(device)
