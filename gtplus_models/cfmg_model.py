"""Stage 1 of enhanced supervision: train the conditional frequency mask generator (CFMG)."""
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_models.enhanced_supervision import (DEFAULT_COND, DEFAULT_FIDELITY_OPT, draw_condition, enhance,
                                                official_cfmg_shift_warning, stack_sources)
from gtplus_models.quality_loss import GTPlusQualityReward, quality_fidelity_loss

# Below this max |M(c=0) - M(c=1)| the masks are taken not to depend on c (masks are in [0, 1]).
C_GAP_WARN = 1e-3


@MODEL_REGISTRY.register()
class CFMGModel(SRModel):
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
        cond_per_sample (bool, optional): draw one c per sample (each sample's loss weighted by its own c) instead
            of one per step as the official code does (default false). A batch then contrasts several c values,
            which helps the network learn to use c.
        c_check_freq (int, optional): every this many iterations (default: logger.print_freq) compare the masks at
            c = 0 and c = 1 on the current batch, log the gap as ``mask_c_gap`` and warn when it is below
            ``c_gap_warn`` (default 1e-3). ``logit_min``/``logit_max`` (the head's logit range) are logged every
            iteration, so saturation is visible.
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
        self.cond_per_sample = train_opt.get('cond_per_sample', False)
        if not isinstance(self.cond_per_sample, bool):
            raise ValueError(f'train.cond_per_sample must be true or false, got {self.cond_per_sample!r}.')
        print_freq = (self.opt.get('logger') or {}).get('print_freq') or 100
        self.c_check_freq = int(train_opt.get('c_check_freq') or print_freq)
        self.c_gap_warn = float(train_opt.get('c_gap_warn', C_GAP_WARN))
        self.setup_optimizers()
        self.setup_schedulers()

    def feed_data(self, data):
        self.gt = data['gt'].to(self.device)
        self.lq = self.gt  # basicsr's validation deletes self.lq; there is no other input
        self.sources = stack_sources(self.gt, data['variants'].to(self.device))

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        batch = self.gt.shape[0]
        cond = draw_condition(batch, self.device, per_sample=self.cond_per_sample)
        enhanced, _ = enhance(self.net_g, self.gt, self.sources, cond)
        if self.cond_per_sample:
            # Each sample has its own c, so each needs its own fidelity and reward (the losses reduce over a batch).
            parts = [self.sample_losses(enhanced[i:i + 1], self.gt[i:i + 1]) for i in range(batch)]
            l_fidelity, reward = (torch.stack(values) for values in zip(*[p[:2] for p in parts]))
            raw = {name: torch.stack([p[2][name] for p in parts]).mean() for name in parts[0][2]}
            l_total = quality_fidelity_loss(l_fidelity, reward, cond).mean()
            l_fidelity, reward = l_fidelity.mean(), reward.mean()
        else:
            l_fidelity, reward, raw = self.sample_losses(enhanced, self.gt)
            l_total = quality_fidelity_loss(l_fidelity, reward, cond[0])
        l_total.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip)
        self.optimizer_g.step()

        loss_dict = OrderedDict(l_total=l_total.detach(), l_fidelity=l_fidelity.detach(),
                                l_quality_reward=reward.detach(), cond=cond.mean().detach())
        loss_dict.update({f'iqa_{name}': value for name, value in raw.items()})
        logits = self.get_bare_model(self.net_g).last_logits
        if logits is not None:
            loss_dict.update(logit_min=logits.min(), logit_max=logits.max())
        if current_iter % self.c_check_freq == 0:
            loss_dict['mask_c_gap'] = self.check_c_dependence(current_iter)
        self.log_dict = self.reduce_loss_dict(loss_dict)

    def sample_losses(self, enhanced, gt):
        """(fidelity, reward, raw IQA scores) of a batch; the reward is 0 without ``quality_opt``."""
        l_fidelity = self.cri_fidelity(enhanced, gt)
        if self.quality_reward is None:
            return l_fidelity, enhanced.new_zeros(()), {}
        reward, raw = self.quality_reward(enhanced.clamp(0, 1))
        return l_fidelity, reward, raw

    @torch.no_grad()
    def check_c_dependence(self, current_iter):
        """max |M(c=0) - M(c=1)| over the current batch's masks (eval mode); warns when it falls below
        ``train.c_gap_warn``: then c steers nothing (typically the logits have saturated).

        Returns:
            Tensor: the gap, a scalar in [0, 1].
        """
        net = self.get_bare_model(self.net_g)
        net.eval()
        try:
            gap = (net.predict_masks(self.gt, 0.0) - net.predict_masks(self.gt, 1.0)).abs().max()
            logits = net.last_logits
        finally:
            net.train()
        if gap < self.c_gap_warn:
            get_root_logger().warning(
                f'CFMG iter {current_iter}: the masks no longer depend on c (max |M(c=0) - M(c=1)| = {gap:.2e} < '
                f'{self.c_gap_warn:g}; logits in [{logits.min():.1f}, {logits.max():.1f}]). Saturated logits are '
                'the usual cause: balance the quality reward against the fidelity term, or set logit_norm on the '
                'CFMG (see the README, "A CFMG that responds to c").')
        return gap

    def test(self):
        cond = (self.opt.get('val') or {}).get('cond', DEFAULT_COND)
        self.net_g.eval()
        with torch.no_grad():
            enhanced, self.masks = enhance(self.net_g, self.gt, self.sources, cond)
        self.output = enhanced.clamp(0, 1)
        self.net_g.train()

    def get_current_visuals(self):
        return OrderedDict(lq=self.gt.detach().cpu(), result=self.output.detach().cpu(), gt=self.gt.detach().cpu())
