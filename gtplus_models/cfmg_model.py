"""Stage 1 of enhanced supervision: train the conditional frequency mask generator (CFMG)."""
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_models.checkpoints import OfficialCheckpointMixin
from gtplus_models.enhanced_supervision import (DEFAULT_COND, DEFAULT_FIDELITY_OPT, draw_condition, enhance,
                                                official_cfmg_shift_warning, stack_sources)
from gtplus_models.quality_loss import GTPlusQualityReward, quality_fidelity_loss


@MODEL_REGISTRY.register()
class CFMGModel(OfficialCheckpointMixin, SRModel):
    """Trains ``network_g`` (a CFMG) to mix the GT with its SR variants in the frequency domain.

    Each step draws one c ~ U(0,1) and minimises ``(1 - c²)·fidelity(Î, GT) - c²·Σ_k w_k·IQA_k(Î)``, so c = 0
    asks for the GT itself and c = 1 for the most "beautiful" mixture the IQA judges can find.

    Data: ``gt`` [B,3,H,W] and ``variants`` [B,N,3,H,W] in [0,1] (GTPlusPairedVariantsDataset with
    ``dataroot_variants``). Options (``train``):
        fidelity_opt: a basicsr loss, Î vs GT (both [0,1]). Default ``{type: MSELoss, loss_weight: 4.0}``: the
            official code takes the MSE on [-1,1] tensors, which is 4x the MSE on [0,1], so this keeps the official
            balance between fidelity and the quality reward at every c.
        quality_opt: ``{metrics: [{name, weight, weights_path}]}`` for :class:`GTPlusQualityReward`.
        grad_clip (float, optional): max gradient norm (official: 1.0).
    Validation (``val.cond``, default 0.3) runs at a fixed c; ``result`` is clamp(Î(c)).
    """

    def __init__(self, opt):
        warning = official_cfmg_shift_warning(opt.get('network_g'), (opt.get('path') or {}).get('pretrain_network_g'),
                                              'path.pretrain_network_g')
        if warning:
            get_root_logger().warning(warning)
        super().__init__(opt)

    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        self.cri_fidelity = build_loss(dict(train_opt.get('fidelity_opt') or DEFAULT_FIDELITY_OPT)).to(self.device)
        quality_opt = train_opt.get('quality_opt')
        self.quality_reward = (GTPlusQualityReward(**quality_opt, device=str(self.device))
                               if quality_opt else None)
        self.grad_clip = train_opt.get('grad_clip')
        self.setup_optimizers()
        self.setup_schedulers()

    def feed_data(self, data):
        self.gt = data['gt'].to(self.device)
        self.lq = self.gt  # basicsr's validation deletes self.lq; there is no other input
        self.sources = stack_sources(self.gt, data['variants'].to(self.device))

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        cond = draw_condition(self.gt.shape[0], self.device, per_sample=False)
        enhanced, _ = enhance(self.net_g, self.gt, self.sources, cond)
        l_fidelity = self.cri_fidelity(enhanced, self.gt)
        if self.quality_reward is not None:
            reward, raw = self.quality_reward(enhanced.clamp(0, 1))
        else:
            reward, raw = enhanced.new_zeros(()), {}
        l_total = quality_fidelity_loss(l_fidelity, reward, cond[0])
        l_total.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip)
        self.optimizer_g.step()

        loss_dict = OrderedDict(l_total=l_total.detach(), l_fidelity=l_fidelity.detach(),
                                l_quality_reward=reward.detach(), cond=cond[0].detach())
        loss_dict.update({f'iqa_{name}': value for name, value in raw.items()})
        self.log_dict = self.reduce_loss_dict(loss_dict)

    def test(self):
        cond = (self.opt.get('val') or {}).get('cond', DEFAULT_COND)
        self.net_g.eval()
        with torch.no_grad():
            enhanced, self.masks = enhance(self.net_g, self.gt, self.sources, cond)
        self.output = enhanced.clamp(0, 1)
        self.net_g.train()

    def get_current_visuals(self):
        return OrderedDict(lq=self.gt.detach().cpu(), result=self.output.detach().cpu(), gt=self.gt.detach().cpu())
