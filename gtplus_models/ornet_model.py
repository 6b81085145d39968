"""Stage 2 of enhanced supervision: train ORNet to map its input towards the enhanced GT Î(c)."""
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_models.checkpoints import OfficialCheckpointMixin, build_frozen_network
from gtplus_models.enhanced_supervision import (DEFAULT_COND, condition_tensor, draw_condition, enhance,
                                                 stack_sources)
from gtplus_models.quality_loss import GTPlusQualityReward

INPUT_MODES = ('gt', 'restorer')


@MODEL_REGISTRY.register()
class ORNetModel(OfficialCheckpointMixin, SRModel):
    """Trains ``network_g`` (an ORNet) against targets from a frozen CFMG.

    Per sample, c ~ U(0,1); the target is ``clamp(Î(c))`` from the frozen CFMG (eval mode, same c) and the loss is
    ``L1(ORNet(x, c), Î(c))`` plus optional perceptual terms against the GT: ``train.perceptual_iqa_opt``
    (pyiqa full-reference metrics through the quality adapter; the official recipe is
    ``{metrics: [{name: lpips, weight: 0.03}, {name: dists, weight: 0.03}]}``) and/or ``train.perceptual_opt``
    (basicsr's VGG PerceptualLoss; its weights come from a local file).

    Options:
        network_cfmg + path.pretrain_network_cfmg: the frozen CFMG (required in training).
        ornet_input: 'gt' (the paper: ORNet sees the GT) or 'restorer' (ORNet sees a frozen restorer's output on
            the LQ; needs network_restorer + path.pretrain_network_restorer and ``lq`` in the data). Default:
            'restorer' when network_restorer is given, else 'gt'.
        val.cond: c used in validation and testing (default 0.3, the official hard-coded value).

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

    def frozen(self, name):
        """Build ``network_<name>`` with weights from ``path.pretrain_network_<name>``, frozen, in eval mode."""
        key = f'network_{name}'
        if not self.opt.get(key):
            raise ValueError(f'{key} is required by ORNetModel here (with path.pretrain_{key}).')
        net = build_frozen_network(self.opt[key], self.opt['path'].get(f'pretrain_{key}'), f'path.pretrain_{key}',
                                   self.device)
        get_root_logger().info(f'Frozen {key} [{net.__class__.__name__}] loaded.')
        return net

    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        self.net_cfmg = self.frozen('cfmg')
        self.cri_pix = build_loss(train_opt.get('pixel_opt') or {'type': 'L1Loss'}).to(self.device)
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
        cond = draw_condition(self.gt.shape[0], self.device, per_sample=True)
        with torch.no_grad():
            target = enhance(self.net_cfmg, self.gt, self.sources, cond)[0].clamp(0, 1)
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq, cond)
        loss_dict = OrderedDict()
        l_pix = self.cri_pix(self.output, target)
        loss_dict['l_pix'] = l_pix
        l_total = l_pix
        if self.cri_perceptual is not None:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    l_total = l_total + value
                    loss_dict[name] = value
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
