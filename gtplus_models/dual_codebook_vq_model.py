"""DualCodebookVQModel: IQPIR stage I, the dual-codebook VQGAN (common + HQ+) trained to reconstruct GT images.

After CodeFormer's stage-I ``VQGANModel`` (sczhou/CodeFormer ``basicsr/models/vqgan_model.py``), which IQPIR
(fengyang1399-pixel/IQPIR, METHODS.md §2) trains its dual-codebook autoencoder with: L1 + a perceptual loss + a hinge
GAN whose generator term is scaled by the adaptive weight (taming-transformers' ``calculate_adaptive_weight`` on the
last decoder layer), plus the codebook losses. The quality score of each GT decides whether it trains the HQ+
codebook (see :class:`gtplus_arch.iqpir_arch.DualCodebookVQAutoEncoder`).
"""
import os.path as osp
from collections import OrderedDict

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_models.model_util import add_perceptual, build_ema, save_generator
from gtplus_models.options import OptionsError
from gtplus_models.synthesized_sr_model import NamedByGT

DEFAULT_PIXEL_OPT = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
OFFICIAL_DISC_WEIGHT = 0.8  # CodeFormer's disc_weight ("taming setting 0.8")
OFFICIAL_DISC_WEIGHT_MAX = 1.0  # the clamp of the adaptive weight in CodeFormer's optimize_parameters
# basicsr losses that build basicsr's VGGFeatureExtractor (and so read VGG_PRETRAIN_PATH).
VGG_LOSSES = ('PerceptualLoss', )


def adaptive_weight(recon_loss, gan_loss, last_layer, max_weight=OFFICIAL_DISC_WEIGHT_MAX):
    """The VQGAN adaptive GAN weight: ``clamp(|d recon / d W| / (|d gan / d W| + 1e-4), 0, max_weight)``.

    Balances the GAN term against the reconstruction at the decoder's last layer, so neither dominates whatever the
    scale of the discriminator's logits (taming-transformers, as CodeFormer's ``calculate_adaptive_weight``).

    Args:
        recon_loss (Tensor): 0-dim reconstruction loss (pixel + perceptual), with a graph to ``last_layer``.
        gan_loss (Tensor): 0-dim generator GAN loss, with a graph to ``last_layer``.
        last_layer (Tensor): the weight both gradients are taken at (the decoder's last conv weight).
        max_weight (float): upper clamp.

    Returns:
        Tensor: 0-dim weight in [0, max_weight], detached (it scales the GAN term, it is not trained through).
    """
    recon_grads = torch.autograd.grad(recon_loss, last_layer, retain_graph=True)[0]
    gan_grads = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(recon_grads) / (torch.norm(gan_grads) + 1e-4)
    return torch.clamp(weight, 0.0, max_weight).detach()


def check_perceptual_weights(perceptual_opt):
    """Raise a one-line error naming the VGG weight file when a VGG perceptual loss is asked for and it is missing.

    basicsr's ``VGGFeatureExtractor`` loads ``basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH`` (relative to the working
    directory) and otherwise asks torchvision to download, which gtplus never does: checked here, before any
    network is built, so a run stops at once.

    Args:
        perceptual_opt (dict): ``train.perceptual_opt``.

    Raises:
        FileNotFoundError: the loss is a VGG loss and the file is not there.
    """
    if perceptual_opt.get('type') not in VGG_LOSSES:
        return  # other perceptual losses load (and check) their own weights
    from basicsr.archs import vgg_arch
    path = osp.abspath(vgg_arch.VGG_PRETRAIN_PATH)
    if not osp.isfile(path):
        vgg_type = perceptual_opt.get('vgg_type', 'vgg19')
        raise FileNotFoundError(f'train.perceptual_opt ({perceptual_opt["type"]}) needs the ImageNet {vgg_type} '
                                f'weights at {path} (torchvision\'s state dict, e.g. vgg19-dcbb9e9d.pth); gtplus '
                                'never downloads them: put the file there or remove train.perceptual_opt.')


def _number(key, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise OptionsError(f'{key} must be a number >= {minimum}, got {value!r}.')
    return value


@MODEL_REGISTRY.register()
class DualCodebookVQModel(SRModel):
    """Trains ``network_g`` (``DualCodebookVQAutoEncoder``) to reconstruct GT images, HQ+ codebook from good GT only.

    Each batch gives ``gt`` ([B,3,H,W] RGB [0,1]) and ``score`` ([B] NR-IQA quality in [0,1], e.g. from
    ``GTPlusScoredBlindDataset``; ``lq`` is ignored). The generator loss, logged term by term:

    - ``l_pix``: ``train.pixel_opt`` (default L1, weight 1) between the reconstruction and the GT;
    - ``l_percep`` / ``l_style``: ``train.perceptual_opt`` if given (basicsr's VGG ``PerceptualLoss`` needs its
      weights at ``basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH``; a missing file is a one-line error naming it);
    - ``l_g_gan``: ``train.gan_opt`` (hinge) through ``network_d``, times ``disc_weight`` (0.8) times the adaptive
      weight (:func:`adaptive_weight` on the last decoder conv; the product logged as ``d_weight``); only from iteration
      ``train.net_d_start_iter`` on, when the discriminator also starts training (``l_d_real``, ``l_d_fake``);
    - ``l_codebook`` and ``l_codebook_hq``: the common and the HQ+ codebook losses times
      ``train.codebook_loss_weight`` (default 1). Samples with score <= the arch's ``hq_threshold`` neither use
      nor train the HQ+ codebook; a batch without ``score`` counts every sample as above it.

    Options (``train``):
        pixel_opt (dict): a basicsr loss, default ``{type: L1Loss, loss_weight: 1.0}``.
        perceptual_opt (dict, optional): a basicsr loss returning ``(percep, style)`` (PerceptualLoss).
        gan_opt (dict, optional): ``{type: GANLoss, gan_type: hinge, loss_weight: 1.0}``; needs ``network_d``
            (e.g. ``GTPlusVQGANDiscriminator``) and ``optim_d``. Without it no discriminator is built.
        net_d_start_iter (int): first iteration with the GAN term and discriminator updates (default 0). CodeFormer
            tests ``current_iter > net_d_start_iter``, so its 30001 is 30002 here: "from" is inclusive.
        disc_weight (float): the GAN term's factor on top of the adaptive weight (default 0.8).
        codebook_loss_weight (float): default 1.0.
        ema_decay (float): as SRModel (``net_g_ema``, saved as ``params_ema``); the codebooks are parameters, so
            the EMA averages them too.

    Validation and ``test`` reconstruct ``gt`` through both codebooks (score None), as stage II decodes; results are
    named after ``gt_path`` when the set gives no ``lq_path``.
    """

    def feed_data(self, data):
        """
        Args:
            data (dict): ``gt`` [B,3,H,W] RGB in [0,1]; ``score`` [B] in [0,1] (optional).
        """
        self.gt = data['gt'].to(self.device)
        self.lq = self.gt  # the input of a reconstruction is its target (SRModel's validation reads lq)
        score = data.get('score')
        self.score = None if score is None else torch.as_tensor(score, dtype=torch.float32).to(self.device)

    def init_training_settings(self):
        train_opt = self.opt['train']
        perceptual_opt = train_opt.get('perceptual_opt')
        if perceptual_opt:
            check_perceptual_weights(perceptual_opt)
        self.net_g.train()
        self.ema_decay = _number('train.ema_decay', train_opt.get('ema_decay', 0))
        build_ema(self, self.ema_decay)

        self.cri_pix = build_loss(dict(train_opt.get('pixel_opt') or DEFAULT_PIXEL_OPT)).to(self.device)
        self.cri_perceptual = build_loss(dict(perceptual_opt)).to(self.device) if perceptual_opt else None
        self.cri_gan = None
        self.net_d = None
        if train_opt.get('gan_opt'):
            if 'network_d' not in self.opt or 'optim_d' not in train_opt:
                raise OptionsError('train.gan_opt needs network_d (e.g. type: GTPlusVQGANDiscriminator) and '
                                   'train.optim_d.')
            self.cri_gan = build_loss(dict(train_opt['gan_opt'])).to(self.device)
            self.net_d = self.model_to_device(build_network(self.opt['network_d']))
            self.print_network(self.net_d)
            load_path = self.opt['path'].get('pretrain_network_d')
            if load_path is not None:
                self.load_network(self.net_d, load_path, self.opt['path'].get('strict_load_d', True),
                                  self.opt['path'].get('param_key_d', 'params'))
            self.net_d.train()

        self.net_d_start_iter = int(_number('train.net_d_start_iter', train_opt.get('net_d_start_iter', 0)))
        self.disc_weight = _number('train.disc_weight', train_opt.get('disc_weight', OFFICIAL_DISC_WEIGHT))
        self.codebook_loss_weight = _number('train.codebook_loss_weight', train_opt.get('codebook_loss_weight', 1.0))
        self.setup_optimizers()
        if train_opt.get('scheduler'):  # basicsr's setup_schedulers requires one; a constant rate needs none
            self.setup_schedulers()

    def setup_optimizers(self):
        super().setup_optimizers()  # optimizer_g, as SRModel
        if self.net_d is not None:
            optim_opt = dict(self.opt['train']['optim_d'])
            optim_type = optim_opt.pop('type')
            self.optimizer_d = self.get_optimizer(optim_type, self.net_d.parameters(), **optim_opt)
            self.optimizers.append(self.optimizer_d)

    def gan_active(self, current_iter):
        """Whether iteration ``current_iter`` (1-based, as basicsr counts) has the GAN term and a D update."""
        return self.net_d is not None and current_iter >= self.net_d_start_iter

    def optimize_parameters(self, current_iter):
        loss_dict = OrderedDict()
        gan = self.gan_active(current_iter)
        if self.net_d is not None:
            for p in self.net_d.parameters():
                p.requires_grad = False  # the generator step must not accumulate D gradients

        self.optimizer_g.zero_grad()
        self.output, loss_common, loss_hq = self.net_g(self.gt, self.score)
        l_recon = self.cri_pix(self.output, self.gt)
        loss_dict['l_pix'] = l_recon
        l_recon = add_perceptual(self.cri_perceptual, self.output, self.gt, l_recon, loss_dict)
        l_total = l_recon
        if gan:
            l_g_gan = self.cri_gan(self.net_d(self.output), True, is_disc=False)
            last_layer = self.get_bare_model(self.net_g).generator.blocks[-1].weight
            d_weight = adaptive_weight(l_recon, l_g_gan, last_layer) * self.disc_weight
            l_total = l_total + d_weight * l_g_gan
            loss_dict['l_g_gan'] = d_weight * l_g_gan
            loss_dict['d_weight'] = d_weight
        l_codebook = self.codebook_loss_weight * loss_common
        l_codebook_hq = self.codebook_loss_weight * loss_hq
        loss_dict['l_codebook'] = l_codebook
        loss_dict['l_codebook_hq'] = l_codebook_hq
        (l_total + l_codebook + l_codebook_hq).backward()
        self.optimizer_g.step()

        if gan:
            for p in self.net_d.parameters():
                p.requires_grad = True
            self.optimizer_d.zero_grad()
            real_pred = self.net_d(self.gt)
            l_d_real = self.cri_gan(real_pred, True, is_disc=True)
            fake_pred = self.net_d(self.output.detach())
            l_d_fake = self.cri_gan(fake_pred, False, is_disc=True)
            (l_d_real + l_d_fake).backward()
            self.optimizer_d.step()
            loss_dict['l_d_real'] = l_d_real
            loss_dict['l_d_fake'] = l_d_fake
            loss_dict['out_d_real'] = real_pred.detach().mean()
            loss_dict['out_d_fake'] = fake_pred.detach().mean()

        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def test(self):
        """Reconstructs ``self.gt`` through both codebooks into ``self.output`` ([B,3,H,W], nominally [0,1])."""
        net = self.net_g_ema if getattr(self, 'net_g_ema', None) is not None else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.gt)[0]
        net.train(was_training)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        # SRModel names each result after lq_path; GT-only sets (GTPlusScoredBlindDataset) give gt_path alone.
        super().nondist_validation(NamedByGT(dataloader), current_iter, tb_logger, save_img)

    def save(self, epoch, current_iter):
        save_generator(self, current_iter)
        if getattr(self, 'net_d', None) is not None:
            self.save_network(self.net_d, 'net_d', current_iter)
        self.save_training_state(epoch, current_iter)


__all__ = ['DualCodebookVQModel', 'adaptive_weight', 'check_perceptual_weights']
