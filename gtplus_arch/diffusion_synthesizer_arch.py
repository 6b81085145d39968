"""Diffusion-refined degradation (METHODS.md §4, issue 12): an off-the-shelf degradation pulled towards the real LQ
distribution by an LQ-domain DDPM, SDEdit-style.

HR -> first stage (Real-ESRGAN's second-order chain with StableSR's parameters by default) -> LQ_init; per image
``strength = max(U(0,1) * max_strength, 1 / steps)``; LQ_init is noised to the sampler timestep that leaves
``int(steps * strength)`` denoising steps (diffusers img2img's rule) and denoised with the DDPM's UNet over those
steps only. The refined LQ pairs with the HR.
"""
import copy
import inspect
from collections.abc import Mapping

import torch
from basicsr.utils.registry import ARCH_REGISTRY

from gtplus_arch.lq_diffusion_arch import (LQDiffusionUNet, _scheduler_class, build_noise_scheduler,
                                           check_scheduler_keys, load_scheduler_folder, pipeline_scheduler_folder)
from gtplus_arch.nafnet_arch import pad_to_multiple
from gtplus_arch.synthesizer_arch import Synthesizer, _rand, _randn, build_first_stage

# METHODS.md §4: the training schedule of the LQ-DDPM (T = 1000, linear betas, ε-prediction).
DEFAULT_NOISE_SCHEDULER = {'type': 'DDPMScheduler', 'num_train_timesteps': 1000, 'beta_schedule': 'linear',
                           'prediction_type': 'epsilon'}
DEFAULT_FIRST_STAGE = {'type': 'RealESRGANSynthesizer', 'preset': 'stablesr'}
DEFAULT_SAMPLER = {'type': 'UniPCMultistepScheduler'}
SAMPLER_TYPES = ('UniPCMultistepScheduler', 'DDIMScheduler', 'DDPMScheduler', 'DPMSolverMultistepScheduler',
                 'EulerDiscreteScheduler')


def _unet_block(unet):
    """The LQDiffusionUNet keywords, copied; a ``network_g``-style block's ``type: LQDiffusionUNet`` is dropped."""
    if unet is None:
        raise ValueError('DiffusionRefinedSynthesizer needs unet: the LQ-DDPM, either {pretrained_path: <local '
                         'diffusers folder>} or the UNet2DModel config keys of the trained network_g (whose weights '
                         'then load from a .pth)')
    if not isinstance(unet, Mapping):
        raise ValueError(f'DiffusionRefinedSynthesizer unet must be a mapping of LQDiffusionUNet keywords, got '
                         f'{unet!r}')
    block = copy.deepcopy(dict(unet))
    kind = block.pop('type', 'LQDiffusionUNet')
    if kind != 'LQDiffusionUNet':
        raise ValueError(f"DiffusionRefinedSynthesizer unet type must be LQDiffusionUNet, got {kind!r}")
    return block


@ARCH_REGISTRY.register()
class DiffusionRefinedSynthesizer(Synthesizer):
    """A first-stage degradation refined by an LQ-domain DDPM (SDEdit): METHODS.md §4.

    Cost: only the ``k = int(steps * strength)`` steps below the start timestep run, so the UNet is called
    ``k * sampler.order`` times per image group and the cost grows with strength * steps. Images that draw the
    same k share one batched trajectory; each group gets a fresh sampler, since diffusers schedulers are stateful
    (step index, and multistep solvers such as UniPC keep the history of earlier model outputs).

    The UNet is kept in eval mode whatever ``train()`` is called with, and runs without gradients: a synthesizer
    never learns. Every random draw (first stage, strengths, start noise, DDPM's per-step noise) comes from
    ``generator``. The UNet must be on the input's device (``load_synthesizer`` puts it there).

    Args:
        scale (int): HR size / LQ size (the first stage's factor; the refinement keeps the size).
        first_stage (dict | None): any synthesizer block; default ``{type: RealESRGANSynthesizer, preset:
            stablesr}``. Its ``scale`` defaults to ``scale`` and must equal it.
        unet (dict): :class:`~gtplus_arch.lq_diffusion_arch.LQDiffusionUNet` keywords: ``pretrained_path`` (a local
            diffusers UNet or pipeline folder, e.g. the official release or ``LQDiffusionModel``'s export) or the
            ``UNet2DModel`` config keys of a trained ``network_g``, whose ``.pth`` (net_g or its EMA) then loads into
            :meth:`weights_module`. Required.
        noise_scheduler (dict | None): the training schedule, a :func:`~gtplus_arch.lq_diffusion_arch.
            build_noise_scheduler` block. Default: the pipeline folder's ``scheduler/`` when ``pretrained_path`` has
            one, else ``{type: DDPMScheduler, num_train_timesteps: 1000, beta_schedule: linear, prediction_type:
            epsilon}``.
        sampler (dict | None): ``{type: UniPCMultistepScheduler | DDIMScheduler | DDPMScheduler |
            DPMSolverMultistepScheduler | EulerDiscreteScheduler, **config overrides}``, built with
            ``from_config(noise_scheduler.config, **overrides)`` so it shares the training betas. Default UniPC.
        steps (int): the sampler's number of inference steps over the whole schedule (50 in the paper).
        max_strength (float): in [0,1]; the paper's 0.25 (t < 250 of 1000). 0 returns the first stage's LQ
            unchanged (a control).
        round_output (bool): round the LQ to 8-bit levels, as an LR PNG holds them.
    """

    def __init__(self, scale=4, first_stage=None, unet=None, noise_scheduler=None, sampler=None, steps=50,
                 max_strength=0.25, round_output=True):
        super().__init__(scale, round_output)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f'DiffusionRefinedSynthesizer: steps must be a positive integer, got {steps!r}')
        if isinstance(max_strength, bool) or not isinstance(max_strength, (int, float)) or \
                not 0 <= max_strength <= 1:
            raise ValueError(f'DiffusionRefinedSynthesizer: max_strength must be in [0, 1], got {max_strength!r}')
        self.steps = steps
        self.max_strength = float(max_strength)

        self.first_stage = build_first_stage(first_stage, scale, DEFAULT_FIRST_STAGE, type(self).__name__)

        self.unet_opt = _unet_block(unet)
        self.unet = LQDiffusionUNet(**self.unet_opt)
        self.unet.eval()
        pretrained_path = self.unet_opt.get('pretrained_path')

        # As the official test script does (UniPC from the release's scheduler/): a pipeline folder's schedule is the
        # one its UNet was trained with. None is kept in options() so that a rebuild reads the folder again.
        folder = pipeline_scheduler_folder(pretrained_path) if noise_scheduler is None else None
        if folder is not None:
            self.noise_scheduler_opt = None
            self.noise_scheduler = load_scheduler_folder(folder, 'DiffusionRefinedSynthesizer noise_scheduler')
        else:
            self.noise_scheduler_opt = copy.deepcopy(dict(noise_scheduler or DEFAULT_NOISE_SCHEDULER))
            self.noise_scheduler = build_noise_scheduler(self.noise_scheduler_opt,
                                                         'DiffusionRefinedSynthesizer noise_scheduler')

        sampler = DEFAULT_SAMPLER if sampler is None else sampler
        if not isinstance(sampler, Mapping) or 'type' not in sampler:
            raise ValueError(f"DiffusionRefinedSynthesizer sampler needs a 'type' key ({', '.join(SAMPLER_TYPES)}), "
                             f'got {sampler!r}')
        self.sampler_opt = copy.deepcopy(dict(sampler))
        overrides = {k: v for k, v in self.sampler_opt.items() if k != 'type'}
        if self.sampler_opt['type'] not in SAMPLER_TYPES:
            raise ValueError(f"DiffusionRefinedSynthesizer sampler: unknown type {self.sampler_opt['type']!r}; one of "
                             f"{', '.join(SAMPLER_TYPES)}")
        self._sampler_cls = _scheduler_class(self.sampler_opt['type'], 'DiffusionRefinedSynthesizer sampler')
        check_scheduler_keys(self._sampler_cls, overrides, 'DiffusionRefinedSynthesizer sampler')
        self._sampler_overrides = overrides
        sampler_ = self.new_sampler()  # built once here so that a bad override fails now, not mid-training
        self._step_takes_generator = 'generator' in inspect.signature(sampler_.step).parameters

    def train(self, mode=True):
        super().train(mode)
        self.unet.eval()  # a synthesizer never learns; eval also fixes PyTorch's attention kernel
        return self

    def weights_module(self):
        """The LQDiffusionUNet when its weights come from a .pth (``--synth-weights`` / ``path.
        pretrain_network_synth``: an LQDiffusionModel net_g or its EMA); None when they come from a diffusers
        folder (``pretrained_path``)."""
        return None if self.unet_opt.get('pretrained_path') else self.unet

    def min_size(self):
        return self.first_stage.min_size()

    def options(self):
        return {**super().options(), 'first_stage': self.first_stage.provenance(),
                'unet': copy.deepcopy(self.unet_opt), 'noise_scheduler': copy.deepcopy(self.noise_scheduler_opt),
                'sampler': copy.deepcopy(self.sampler_opt), 'steps': self.steps, 'max_strength': self.max_strength}

    def new_sampler(self):
        """A fresh sampler on the training betas (diffusers schedulers carry state from one trajectory to the
        next, so every trajectory needs its own)."""
        return self._sampler_cls.from_config(self.noise_scheduler.config, **self._sampler_overrides)

    def denoising_steps(self, strength):
        """The number of denoising steps at ``strength`` (diffusers img2img's rule): ``min(int(steps * strength),
        steps)``."""
        return min(int(self.steps * strength), self.steps)

    def draw_steps(self, batch, generator=None, device='cpu'):
        """Per image: ``strength = max(U(0,1) * max_strength, 1 / steps)``, then its number of denoising steps.

        Args:
            batch (int): how many images.
            generator (torch.Generator | None): the source of the B uniform draws (None: the global RNG of
                ``device``).
            device (str | torch.device): where the draws are made without a generator.

        Returns:
            list[int]: k per image, 1 <= k <= steps (the UNet runs k * sampler.order times for its group).
        """
        strengths = (_rand(generator, device, batch, dtype=torch.float64) * self.max_strength).clamp_min(1 / self.steps)
        # strength >= 1/steps promises one step at least; int(steps * (1/steps)) can round down to 0 (steps = 49).
        return [max(self.denoising_steps(s), 1) for s in strengths.tolist()]

    @torch.no_grad()
    def _denoise(self, lq, k, generator):
        """SDEdit over the last ``k`` of the sampler's ``steps`` steps.

        Args:
            lq (Tensor): [B,3,h,w] RGB in [0,1].
            k (int): 1 <= k <= steps.
            generator (torch.Generator | None): the start noise and DDPM's per-step noise.

        Returns:
            Tensor: [B,3,h,w] float in the UNet's dtype, about [0,1] (not clamped).
        """
        param = next(self.unet.parameters())
        # Reflect padding (see pad_to_multiple): zeros would make a dark border the UNet spreads inward.
        x0, (height, width) = pad_to_multiple(lq.to(param.dtype), self.unet.size_multiple)
        batch = x0.size(0)
        sampler = self.new_sampler()
        sampler.set_timesteps(self.steps, device=x0.device)
        # diffusers img2img (StableDiffusionImg2ImgPipeline.get_timesteps): start at index steps - k, times the
        # solver order, and tell multistep solvers where they begin (their add_noise and step index read it).
        start = (self.steps - k) * getattr(sampler, 'order', 1)
        timesteps = sampler.timesteps[start:]
        if hasattr(sampler, 'set_begin_index'):
            sampler.set_begin_index(start)
        noise = _randn(generator, x0.device, *x0.shape).to(x0.dtype)
        x = sampler.add_noise(2 * x0 - 1, noise, timesteps[:1].repeat(batch))
        extra = {'generator': generator} if self._step_takes_generator else {}
        for t in timesteps:
            eps = self.unet(sampler.scale_model_input(x, t), t.reshape(1).expand(batch))
            x = sampler.step(eps, t, x, **extra).prev_sample
        return ((x + 1) / 2)[..., :height, :width]

    @torch.no_grad()
    def refine(self, lq, strength, generator=None):
        """Refine a given LQ batch at one fixed strength (the validation strip of ``LQDiffusionModel`` uses it).

        Args:
            lq (Tensor): [B,3,h,w] RGB in [0,1], any size (padded to the UNet's multiple and cropped back).
            strength (float): in [0,1]; ``int(steps * strength)`` denoising steps run (diffusers img2img's rule),
                so a strength below 1/steps, and 0, return ``lq`` itself, unchanged.
            generator (torch.Generator | None): the source of the noise.

        Returns:
            Tensor: [B,3,h,w] RGB in [0,1], ``lq``'s dtype and device, not rounded.
        """
        if not torch.is_tensor(lq) or lq.dim() != 4 or lq.size(1) != 3:
            shape = tuple(lq.shape) if torch.is_tensor(lq) else type(lq).__name__
            raise ValueError(f'DiffusionRefinedSynthesizer.refine expects an RGB batch Tensor[B,3,h,w], got {shape}')
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise ValueError(f'DiffusionRefinedSynthesizer.refine: strength must be in [0, 1], got {strength!r}')
        k = self.denoising_steps(strength)
        if k == 0:
            return lq
        return self._denoise(lq, k, generator).clamp(0, 1).to(lq.dtype)

    @torch.no_grad()
    def forward(self, hr, generator=None):
        """Tensor[B,3,H,W] RGB in [0,1] -> Tensor[B,3,H/scale,W/scale] RGB in [0,1]: first stage, then SDEdit.

        Args:
            hr (Tensor): [B,3,H,W] RGB in [0,1], H and W multiples of ``scale``.
            generator (torch.Generator | None): every draw, in this order: the first stage's, the B strengths, then
                per group (ascending k) the start noise and the sampler's.
        """
        self.check_input(hr)
        lq0 = self.first_stage(hr, generator)
        if self.max_strength == 0:
            return lq0
        ks = self.draw_steps(lq0.size(0), generator, lq0.device)
        out = torch.empty_like(lq0, dtype=next(self.unet.parameters()).dtype)
        for k in sorted(set(ks)):
            index = torch.tensor([i for i, ki in enumerate(ks) if ki == k], device=lq0.device)
            out[index] = self._denoise(lq0[index], k, generator)
        return self.finish(out, hr.dtype)
