"""LQDiffusionModel: an epsilon-prediction DDPM on real LQ images, trained over low timesteps only (METHODS.md §4).

Stage 1 of the diffusion-pairs pipeline: the EMA UNet it exports (a diffusers folder) is the denoiser of
``DiffusionRefinedSynthesizer``, which noises an off-the-shelf degradation to a small strength and denoises it
towards the real LQ distribution (SDEdit). Only timesteps below ``train.max_timestep`` are trained because the
synthesizer never noises beyond ``max_strength * T`` (0.25 * 1000 in the paper).
"""
import json
import os
import os.path as osp
import shutil
from collections import OrderedDict

import cv2
import torch
import torch.nn.functional as F
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_arch.diffusion_synthesizer_arch import (
    DEFAULT_NOISE_SCHEDULER,
    DiffusionRefinedSynthesizer,
)
from gtplus_arch.lq_diffusion_arch import build_noise_scheduler, sample_timesteps
from gtplus_data.figures import labelled_strip
from gtplus_data.image_util import tensor_to_uint8, write_png
from gtplus_models.model_util import build_ema
from gtplus_models.options import OptionsError
from gtplus_models.synthesized_sr_model import TRAIN_STREAM, VAL_STREAM, pair_seed

DEFAULT_MAX_TIMESTEP = 250  # t < 250: the paper's lower bound of its 250-500 range, = max_strength 0.25 * T
MIXED_PRECISION = {'no': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# Validation: a strip per image (first stage | refined at each strength | a real LQ) and l_mse_val. The first stage
# defaults to DiffusionRefinedSynthesizer's own (RealESRGANSynthesizer, stablesr preset).
DEFAULT_VAL_STRENGTHS = (0.1, 0.25)
DEFAULT_VAL_STEPS = 20
DEFAULT_VAL_SAMPLER = {'type': 'DDIMScheduler'}  # deterministic (eta 0) and cheap
# l_mse_val is taken at these fractions of max_timestep, so its value is comparable across validations and runs.
VAL_TIMESTEP_FRACTIONS = (0.1, 0.5, 0.9)
EXPORT_PREFIX = 'diffusers_'
STRIP_HEIGHT = 128  # LQ validation images are small: panels are enlarged (nearest) so the texture stays visible


def _check_number(key, value, low, high, integer=False):
    kinds = (int, ) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise OptionsError(f'{key} must be {"an integer" if integer else "a number"} in [{low}, {high}], '
                           f'got {value!r}.')
    return value


def export_folder(models_dir, label):
    """``<models_dir>/diffusers_<label>``: where :meth:`LQDiffusionModel.export_diffusers` writes (label: an
    iteration or 'latest')."""
    return osp.join(models_dir, f'{EXPORT_PREFIX}{label}')


@MODEL_REGISTRY.register()
class LQDiffusionModel(SRModel):
    """Trains ``network_g`` (``LQDiffusionUNet``) to predict the noise added to real LQ images at low timesteps.

    Each training batch ``gt`` (Tensor[B,3,H,W], RGB in [0,1]: LQ images, e.g. random crops of a
    ``GTPlusSingleHRDataset`` over a real-LQ LMDB) becomes ``x0 = 2 * gt - 1`` ([-1,1], the DDPM's scale). With
    ``t ~ U{0, ..., max_timestep - 1}`` and ``noise ~ N(0, I)`` per image, ``x_t = scheduler.add_noise(x0, noise,
    t)`` and the loss is ``MSE(net_g(x_t, t), noise)``, logged as ``l_mse``. ``t`` and ``noise`` are drawn, in that
    order, from a ``torch.Generator`` on ``self.device`` seeded by ``pair_seed(manual_seed, rank, TRAIN_STREAM,
    iteration)``: an ``--auto_resume`` run draws what the uninterrupted run drew (bit for bit on the CPU).

    basicsr's SRModel does the rest: ``network_g`` and ``path.pretrain_network_g`` (also a checkpoint's
    ``params_ema``), the EMA copy ``net_g_ema`` (``train.ema_decay``, updated after each step as
    ``ema = d * ema + (1 - d) * w``), the optimiser, the lr scheduler, and ``save`` (``net_g_<iter>.pth`` with
    ``params`` and ``params_ema``, so a resume restores both). The EMA weights are what validation and export use.

    Options:
        network_g (dict): ``{type: LQDiffusionUNet, ...}`` (diffusers ``UNet2DModel`` keys or ``pretrained_path``).
        noise_scheduler (dict): ``{type: DDPMScheduler, ...}`` with diffusers' config keys; the keys not given are
            T = 1000 (``num_train_timesteps``), ``beta_schedule: linear``, ``prediction_type: epsilon``. Only
            ``epsilon`` is trained.
        train.max_timestep (int): in [1, num_train_timesteps]; default 250.
        train.optim_g (dict): any torch optimiser, e.g. ``{type: AdamW, lr: 1e-4}``.
        train.scheduler (dict, optional): basicsr's lr scheduler; none: a constant learning rate.
        train.ema_decay (float): e.g. 0.999; 0 validates and exports ``net_g`` itself.
        train.mixed_precision (str): ``no`` (default), ``fp16`` (CUDA only: autocast and a GradScaler, whose state
            is saved beside each training state as ``<iter>.grad_scaler``) or ``bf16`` (autocast, CPU or CUDA; no
            scaler needed). The loss is taken in float32; the weights stay float32.
        train.export_diffusers (bool): at the end of training write the EMA UNet as a diffusers pipeline folder
            ``models/diffusers_latest/`` (``unet/``, ``scheduler/``, ``model_index.json``), which
            ``DiffusionRefinedSynthesizer``'s ``unet: {pretrained_path: .../unet}``, ``UNet2DModel.from_pretrained``
            and ``DDPMPipeline.from_pretrained`` load. Default true.
        train.export_every_checkpoint (bool): also ``models/diffusers_<iter>/`` at each checkpoint. Default false.
            Each export is written before that checkpoint's training state, so a resumed run never misses one.
        val.first_stage (dict): the synthesizer that makes the initial LQ of the validation strips from the
            validation image treated as HR; default DiffusionRefinedSynthesizer's (``{type: RealESRGANSynthesizer,
            preset: stablesr}``, scale 4).
        val.strengths (list[float]): two refinement strengths in (0, 1]; default [0.1, 0.25].
        val.steps (int): sampler steps of the full schedule (only those below the strength run); default 20.
        val.sampler (str | dict): the sampler of the refinement, ``{type: DDIMScheduler | UniPCMultistepScheduler |
            ...}`` or just its type; default DDIM.

    Validation (every ``val.val_freq``; each validation image is a real LQ image, RGB [0,1]):
        - ``l_mse_val``: the EMA net's epsilon-MSE on the image (cropped to the UNet's size multiple) at the
          timesteps ``VAL_TIMESTEP_FRACTIONS * max_timestep``, with noise fixed per image; logged like a basicsr
          metric (lower is better, the best value and iteration tracked).
        - a strip ``visualization/<image>/<image>_<iter>.png``: initial LQ (``val.first_stage`` of the image) |
          refined at each of ``val.strengths`` (a ``DiffusionRefinedSynthesizer`` sharing the EMA UNet, seeded per
          image) | a real LQ (the first image of the latest training batch, when there is one). Written at every
          validation whatever ``val.save_img`` says: the strips are what the validation of a generative model is
          for. ``val.metrics`` is not used.
    """

    def __init__(self, opt):
        self.noise_scheduler = build_noise_scheduler(self.noise_scheduler_block(opt), key='noise_scheduler')
        self.grad_scaler = None
        self.autocast_dtype = None
        self.real_lq = None  # Tensor[1,3,h,w] [0,1]: the first image of the latest training batch, for the strips
        self._val_synth = None
        super().__init__(opt)

    @staticmethod
    def noise_scheduler_block(opt):
        """The ``noise_scheduler`` block with its defaults filled in; refuses all but epsilon prediction."""
        block = opt.get('noise_scheduler') or {}
        if not isinstance(block, dict):
            raise OptionsError(f'noise_scheduler must be a mapping ({{type: DDPMScheduler, ...}}), got {block!r}.')
        block = {**DEFAULT_NOISE_SCHEDULER, **block}
        if block['prediction_type'] != 'epsilon':
            raise OptionsError(f"noise_scheduler.prediction_type must be epsilon (LQDiffusionModel trains an "
                               f"epsilon-prediction DDPM), got {block['prediction_type']!r}.")
        return block

    @property
    def num_train_timesteps(self):
        return int(self.noise_scheduler.config.num_train_timesteps)

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.max_timestep = _check_number('train.max_timestep', train_opt.get('max_timestep', DEFAULT_MAX_TIMESTEP),
                                          1, self.num_train_timesteps, integer=True)
        precision = train_opt.get('mixed_precision', 'no')
        if precision is False or precision is None:  # YAML reads a bare `no` as false
            precision = 'no'
        if precision not in MIXED_PRECISION:
            raise OptionsError(f"train.mixed_precision must be one of no, fp16, bf16, got {precision!r}.")
        if precision == 'fp16' and self.device.type != 'cuda':
            raise OptionsError('train.mixed_precision: fp16 needs a CUDA device (num_gpu >= 1); on the CPU use no '
                               'or bf16.')
        self.mixed_precision, self.autocast_dtype = precision, MIXED_PRECISION[precision]
        # Only fp16 underflows in its gradients; bf16 has float32's exponent range.
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if precision == 'fp16' else None
        for key in ('export_diffusers', 'export_every_checkpoint'):
            if not isinstance(train_opt.get(key, key == 'export_diffusers'), bool):
                raise OptionsError(f'train.{key} must be true or false, got {train_opt[key]!r}.')
        self.net_g.train()
        self.ema_decay = _check_number('train.ema_decay', train_opt.get('ema_decay', 0), 0, 1)
        if self.ema_decay > 0:
            get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
        build_ema(self, self.ema_decay)
        self.setup_optimizers()
        if train_opt.get('scheduler'):
            self.setup_schedulers()
        get_root_logger().info(f'LQDiffusionModel: t ~ U{{0..{self.max_timestep - 1}}} of '
                               f'T = {self.num_train_timesteps}, mixed precision {precision}.')

    # ------------------------------------------------------------------------------------------------ #
    # Training

    def generator(self, stream, index):
        """A ``torch.Generator`` on self.device seeded by ``pair_seed(manual_seed, rank, stream, index)``."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(pair_seed(self.opt.get('manual_seed') or 0, self.opt.get('rank', 0), stream, index))
        return generator

    def draw(self, x0, current_iter):
        """The timesteps and noise of iteration ``current_iter``: ``t`` Tensor[B] int64 in [0, max_timestep), then
        ``noise`` Tensor like ``x0`` ~ N(0, I), both from :meth:`generator` (TRAIN_STREAM, current_iter)."""
        generator = self.generator(TRAIN_STREAM, current_iter)
        timesteps = sample_timesteps(x0.shape[0], self.max_timestep, generator=generator, device=self.device)
        noise = torch.randn(x0.shape, generator=generator, device=self.device, dtype=x0.dtype)
        return timesteps, noise

    def feed_data(self, data):
        """``gt`` (Tensor[B,3,H,W], RGB [0,1], real LQ images) -> ``self.x0`` (the same on [-1,1])."""
        if 'gt' not in data:
            raise KeyError("LQDiffusionModel needs 'gt' in the data: the LQ images it learns (e.g. "
                           'GTPlusSingleHRDataset over a real-LQ LMDB).')
        self.gt = data['gt'].to(self.device)
        self.x0 = self.gt * 2 - 1

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def optimize_parameters(self, current_iter):
        timesteps, noise = self.draw(self.x0, current_iter)
        x_t = self.noise_scheduler.add_noise(self.x0, noise, timesteps)
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.autocast():
            pred = self.net_g(x_t, timesteps)
        l_mse = F.mse_loss(pred.float(), noise.float())  # in float32 whatever the autocast dtype
        if self.grad_scaler is not None:
            self.grad_scaler.scale(l_mse).backward()
            self.grad_scaler.step(self.optimizer_g)
            self.grad_scaler.update()
        else:
            l_mse.backward()
            self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(OrderedDict(l_mse=l_mse.detach()))
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.real_lq = self.gt[:1].detach()

    # ------------------------------------------------------------------------------------------------ #
    # Saving, resuming, export

    def denoiser(self):
        """The network validation and export use: the EMA UNet, or net_g (unwrapped) without EMA."""
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    def save(self, epoch, current_iter):
        """basicsr's save (``net_g`` with ``params`` and ``params_ema``, then the training state), with the
        diffusers export written first (see ``train.export_diffusers``) and the GradScaler state beside the
        training state."""
        train_opt = self.opt.get('train') or {}
        if train_opt.get('export_diffusers', True) and (current_iter == -1 or
                                                         train_opt.get('export_every_checkpoint', False)):
            self.export_diffusers('latest' if current_iter == -1 else current_iter)
        self.save_grad_scaler(current_iter)
        super().save(epoch, current_iter)

    @master_only
    def export_diffusers(self, label):
        """Write the denoiser and the noise scheduler as a diffusers pipeline folder, atomically.

        Layout: ``models/diffusers_<label>/unet/`` (``save_pretrained``), ``scheduler/`` (the scheduler's
        ``save_pretrained``) and ``model_index.json`` (``DDPMPipeline``). The folder is assembled under a temporary
        name and renamed into place, so a killed run never leaves a half-written export where a loader looks.

        Args:
            label (int | str): the iteration or 'latest'.

        Returns:
            str: the folder.
        """
        import diffusers
        final = export_folder(self.opt['path']['models'], label)
        tmp = final + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        net = self.denoiser()
        was_training = net.training
        net.save_pretrained(osp.join(tmp, 'unet'))
        net.train(was_training)
        self.noise_scheduler.save_pretrained(osp.join(tmp, 'scheduler'))
        index = {'_class_name': 'DDPMPipeline', '_diffusers_version': diffusers.__version__,
                 'scheduler': ['diffusers', type(self.noise_scheduler).__name__], 'unet': ['diffusers', 'UNet2DModel']}
        with open(osp.join(tmp, 'model_index.json'), 'w') as f:
            json.dump(index, f, indent=2)
        if osp.exists(final):  # an export of the same label from before a resume: replace it
            old = final + '.old'
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        get_root_logger().info(f'Diffusers export (EMA UNet and noise scheduler) saved: {final}')
        return final

    def _scaler_path(self, current_iter):
        return osp.join(self.opt['path']['training_states'], f'{current_iter}.grad_scaler')

    @master_only
    def save_grad_scaler(self, current_iter):
        """fp16 only: the GradScaler's state beside ``<iter>.state`` (written before it), so a resume keeps the
        loss scale instead of restarting at 65536 and skipping steps."""
        if self.grad_scaler is None or current_iter == -1:
            return
        path = self._scaler_path(current_iter)
        torch.save(self.grad_scaler.state_dict(), path + '.tmp')
        os.replace(path + '.tmp', path)

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.grad_scaler is not None:
            path = self._scaler_path(resume_state['iter'])
            if osp.isfile(path):
                self.grad_scaler.load_state_dict(torch.load(path, weights_only=True))
            else:
                get_root_logger().warning(f'{path} is missing: the fp16 loss scale starts again from its default.')

    # ------------------------------------------------------------------------------------------------ #
    # Validation

    def validation_synthesizer(self):
        """A ``DiffusionRefinedSynthesizer`` (``val.first_stage``, ``val.sampler``, ``val.steps``, this model's noise
        scheduler) whose UNet is :meth:`denoiser` itself (shared, not copied, so it always sees the current EMA
        weights), built once."""
        if self._val_synth is None:
            val_opt = self.opt.get('val') or {}
            sampler = val_opt.get('sampler', DEFAULT_VAL_SAMPLER)
            first_stage = val_opt.get('first_stage')
            synth = DiffusionRefinedSynthesizer(
                scale=(first_stage or {}).get('scale', 4), first_stage=first_stage,
                unet=dict(self.opt['network_g']), noise_scheduler=self.noise_scheduler_block(self.opt),
                sampler={'type': sampler} if isinstance(sampler, str) else sampler,
                steps=val_opt.get('steps', DEFAULT_VAL_STEPS), max_strength=max(self.val_strengths()))
            synth.unet = self.denoiser()  # its own freshly built UNet is dropped
            self._val_synth = synth.to(self.device)
        return self._val_synth

    def val_strengths(self):
        strengths = (self.opt.get('val') or {}).get('strengths', list(DEFAULT_VAL_STRENGTHS))
        if not isinstance(strengths, (list, tuple)) or not strengths:
            raise OptionsError(f'val.strengths must be a list of strengths in (0, 1], got {strengths!r}.')
        return [_check_number(f'val.strengths[{i}]', s, 1e-6, 1) for i, s in enumerate(strengths)]

    @torch.no_grad()
    def mse_at_fixed_timesteps(self, lq, index):
        """The denoiser's epsilon-MSE on one LQ image at ``VAL_TIMESTEP_FRACTIONS * max_timestep``.

        Args:
            lq (Tensor): [1,3,H,W] RGB [0,1] on self.device, H and W multiples of the UNet's size multiple.
                The denoiser is in eval mode (the caller's job).
            index (int): the image's position in the validation set (seeds its noise).

        Returns:
            float: the mean over the timesteps.
        """
        max_timestep = getattr(self, 'max_timestep', None) or (self.opt.get('train') or {}).get(
            'max_timestep', DEFAULT_MAX_TIMESTEP)
        timesteps = torch.tensor([min(max_timestep - 1, int(f * max_timestep)) for f in VAL_TIMESTEP_FRACTIONS],
                                 device=self.device, dtype=torch.int64)
        x0 = (lq * 2 - 1).expand(len(timesteps), -1, -1, -1)
        noise = torch.randn(x0.shape, generator=self.generator(VAL_STREAM, index), device=self.device,
                            dtype=x0.dtype)
        pred = self.denoiser()(self.noise_scheduler.add_noise(x0, noise, timesteps), timesteps)
        return F.mse_loss(pred.float(), noise).item()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        net = self.denoiser()
        multiple = net.size_multiple
        synth = self.validation_synthesizer()
        strengths = self.val_strengths()
        was_training = net.training  # net_g itself when there is no EMA
        net.eval()
        total = 0.
        try:
            for index, data in enumerate(dataloader):
                img = data['gt'].to(self.device)
                name = osp.splitext(osp.basename(data['gt_path'][0]))[0]
                lq = img[..., :img.shape[-2] // multiple * multiple, :img.shape[-1] // multiple * multiple]
                if lq.shape[-1] == 0 or lq.shape[-2] == 0:
                    raise ValueError(f'validation image {name} is {tuple(img.shape[-2:])}, smaller than the UNet\'s '
                                     f'size multiple {multiple}.')
                total += self.mse_at_fixed_timesteps(lq, index)
                self.write_strip(synth, img, name, index, strengths, current_iter)
        finally:
            net.train(was_training)
        value = total / (index + 1)
        if not hasattr(self, 'best_metric_results'):
            self.best_metric_results = {}
        self.best_metric_results.setdefault(dataset_name, {'l_mse_val': {'better': 'lower', 'val': float('inf'),
                                                                         'iter': -1}})
        self.metric_results = {'l_mse_val': value}
        self._update_best_metric_result(dataset_name, 'l_mse_val', value, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    @torch.no_grad()
    def write_strip(self, synth, hr, name, index, strengths, current_iter):
        """initial LQ | refined at each strength | a real LQ, as one PNG under the visualization folder.

        Args:
            hr (Tensor): [1,3,H,W] RGB [0,1], the validation image treated as HR (trimmed to what the first
                stage and the UNet take).
        """
        # refine pads to the UNet's multiple itself; the first stage needs whole LQ pixels.
        hr = hr[..., :hr.shape[-2] // synth.scale * synth.scale, :hr.shape[-1] // synth.scale * synth.scale]
        initial = synth.first_stage(hr, self.generator(VAL_STREAM, index))
        panels = [('initial LQ', tensor_to_uint8(initial))]
        for strength in strengths:
            refined = synth.refine(initial, strength, generator=self.generator(VAL_STREAM, index))
            panels.append((f'refined s={strength:g}', tensor_to_uint8(refined)))
        if self.real_lq is not None:
            panels.append(('real LQ', tensor_to_uint8(self.real_lq)))
        folder = self.opt['path']['visualization']
        path = (osp.join(folder, name, f'{name}_{current_iter}.png') if self.opt['is_train'] else
                osp.join(folder, f'{name}_{self.opt["name"]}.png'))
        write_png(path, labelled_strip(panels, STRIP_HEIGHT, interpolation=cv2.INTER_NEAREST))
