"""Stage 2 of enhanced supervision: train ORNet to map its input towards the enhanced GT Î(c)."""
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_arch import CFMG
from gtplus_models.checkpoints import build_frozen_network
from gtplus_models.enhanced_supervision import (DEFAULT_CLAMP_OUTPUT, DEFAULT_COND, DEFAULT_COND_PER_SAMPLE,
                                                DEFAULT_PIXEL_OPT, condition_tensor, draw_condition, enhance,
                                                official_cfmg_shift_warning, stack_sources)
from gtplus_models.model_util import add_perceptual
from gtplus_models.quality_loss import GTPlusQualityReward

INPUT_MODES = ('gt', 'restorer')


def _flag(train_opt, key, default):
    # A quoted 'false' in YAML is a non-empty string, which bool() would read as true.
    value = train_opt.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f'train.{key} must be true or false, got {value!r}.')
    return value


@MODEL_REGISTRY.register()
class ORNetModel(SRModel):
    """Trains ``network_g`` (an ORNet) against targets from a frozen CFMG.

    Each step draws c ~ U(0,1) (one value for the batch, as the official code; or one per sample; or trains at one
    fixed c); the target is
    ``clamp(Î(c))`` from the frozen CFMG (eval mode, same c) and the loss is ``pixel(clamp(ORNet(x, c)), Î(c))`` plus
    optional perceptual terms against the GT: ``train.perceptual_iqa_opt`` (pyiqa full-reference metrics through the
    quality adapter; the official recipe is ``{metrics: [{name: lpips, weight: 0.03}, {name: dists, weight: 0.03}]}``)
    and/or ``train.perceptual_opt`` (basicsr's VGG PerceptualLoss; its weights come from a local file).

    Options:
        network_cfmg + path.pretrain_network_cfmg: the frozen CFMG (required in training). The released CFMG.pkl
            needs ``official_fftshift: true`` (a warning says so when the file is named like it and the flag is off).
        train.pixel_opt: a basicsr loss, ORNet output vs Î(c) (both [0,1]). Default
            ``{type: L1Loss, loss_weight: 2.0}``: the official L1 is taken on [-1,1] tensors, 2x the L1 on [0,1].
        train.cond_per_sample (bool): draw one c per sample instead of one per step. Default false (official).
        train.fixed_cond (float | None): train at this one c in [0,1] instead of drawing c. ``fixed_cond: 0`` is the
            control that isolates enhanced supervision: the same network trained towards Î(0), the CFMG's
            fidelity-only output (about the GT). Default None (draw c).
        train.clamp_output (bool): clamp ORNet's output to [0,1] before the pixel loss, as the official code does
            (pixels outside [0,1] then get no gradient from it). Default true.
        ornet_input: 'gt' (the paper: ORNet sees the GT) or 'restorer' (ORNet sees a frozen restorer's output on
            the LQ; needs network_restorer + path.pretrain_network_restorer and ``lq`` in the data). Default:
            'restorer' when network_restorer is given, else 'gt'.
        val.cond: c used in validation and testing (default 0.3, the official hard-coded value).

    Log: ``l_pix`` (and ``l_percep``/``l_style``, ``l_iqa`` with each ``iqa_*`` score when configured).

    Data: ``gt`` [B,3,H,W], ``variants`` [B,N,3,H,W] (training), ``lq`` [B,3,H,W] (restorer mode), all in [0,1].
    In validation/testing the input is the GT (mode 'gt') or restorer(lq), and ``result`` = ORNet(input, c).
    """

    def __init__(self, opt):
        self.input_mode = opt.get('ornet_input', 'restorer' if opt.get('network_restorer') else 'gt')
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"ornet_input must be one of {INPUT_MODES}, got '{self.input_mode}'")
        super().__init__(opt)
        self.net_restorer = None
        if self.input_mode == 'restorer':
            self.net_restorer = self.frozen('restorer')

    def frozen(self, name, expected_type=None):
        """Build ``network_<name>`` with weights from ``path.pretrain_network_<name>``, frozen, in eval mode.

        ``expected_type``: the class ``network_<name>`` must build (CFMG for ``network_cfmg``); None: any network.
        """
        key = f'network_{name}'
        if not self.opt.get(key):
            raise ValueError(f'{key} is required by ORNetModel here (with path.pretrain_{key}).')
        weights_path = self.opt['path'].get(f'pretrain_{key}')
        warning = official_cfmg_shift_warning(self.opt[key], weights_path, f'path.pretrain_{key}')
        if warning:
            get_root_logger().warning(warning)
        net = build_frozen_network(self.opt[key], weights_path, f'path.pretrain_{key}', self.device, expected_type,
                                   source=key)
        get_root_logger().info(f'Frozen {key} [{net.__class__.__name__}] loaded.')
        return net

    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        self.net_cfmg = self.frozen('cfmg', CFMG)
        self.cri_pix = build_loss(dict(train_opt.get('pixel_opt') or DEFAULT_PIXEL_OPT)).to(self.device)
        self.cond_per_sample = _flag(train_opt, 'cond_per_sample', DEFAULT_COND_PER_SAMPLE)
        self.clamp_output = _flag(train_opt, 'clamp_output', DEFAULT_CLAMP_OUTPUT)
        self.fixed_cond = train_opt.get('fixed_cond')
        if self.fixed_cond is not None and (isinstance(self.fixed_cond, bool) or
                                            not isinstance(self.fixed_cond, (int, float)) or
                                            not 0 <= self.fixed_cond <= 1):
            raise ValueError(f'train.fixed_cond must be a number in [0, 1] or null, got {self.fixed_cond!r}.')
        perceptual = train_opt.get('perceptual_opt')
        self.cri_perceptual = build_loss(perceptual).to(self.device) if perceptual else None
        iqa_opt = train_opt.get('perceptual_iqa_opt')
        self.iqa_reward = GTPlusQualityReward(**iqa_opt, device=str(self.device)) if iqa_opt else None
        self.grad_clip = train_opt.get('grad_clip')
        self.setup_optimizers()
        self.setup_schedulers()

    def feed_data(self, data):
        self.gt = data['gt'].to(self.device)
        self.sources = stack_sources(self.gt, data['variants'].to(self.device)) if 'variants' in data else None
        if self.input_mode == 'restorer':
            if 'lq' not in data:
                raise KeyError("ORNetModel with input 'restorer' needs 'lq' in the data (set dataroot_lq).")
            with torch.no_grad():
                self.lq = self.net_restorer(data['lq'].to(self.device)).clamp(0, 1)
        else:
            self.lq = self.gt

    def optimize_parameters(self, current_iter):
        if self.sources is None:
            raise KeyError("ORNetModel training needs 'variants' in the data (set dataroot_variants).")
        if self.fixed_cond is None:
            cond = draw_condition(self.gt.shape[0], self.device, per_sample=self.cond_per_sample)
        else:
            cond = condition_tensor(float(self.fixed_cond), self.gt.shape[0], self.device)
        with torch.no_grad():
            target = enhance(self.net_cfmg, self.gt, self.sources, cond)[0].clamp(0, 1)
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq, cond)
        loss_dict = OrderedDict()
        l_pix = self.cri_pix(self.output.clamp(0, 1) if self.clamp_output else self.output, target)
        loss_dict['l_pix'] = l_pix
        l_total = l_pix
        l_total = add_perceptual(self.cri_perceptual, self.output, self.gt, l_total, loss_dict)
        if self.iqa_reward is not None:
            reward, raw = self.iqa_reward(self.output.clamp(0, 1), self.gt)
            l_total = l_total - reward
            loss_dict['l_iqa'] = -reward
            loss_dict.update({f'iqa_{name}': value for name, value in raw.items()})
        l_total.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip)
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)

    def test(self):
        cond = condition_tensor((self.opt.get('val') or {}).get('cond', DEFAULT_COND), self.lq.shape[0],
                                self.device)
        self.net_g.eval()
        with torch.no_grad():
            self.output = self.net_g(self.lq, cond).clamp(0, 1)
        self.net_g.train()
