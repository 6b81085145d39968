"""IQPIRModel: IQPIR stage II, the quality-conditioned code-prediction transformer on a frozen dual-codebook VQGAN.

After CodeFormer's stage-II ``CodeFormerIdxModel`` as IQPIR (fengyang1399-pixel/IQPIR, METHODS.md §2) trains it:
the GT codes of both codebooks come from the frozen stage-I autoencoder (``network_vqgan``); the encoder latent
(plus the score-bin embedding) is pulled towards the fused GT code features (``l_feat``), each of the two code heads
learns the GT codes by cross-entropy (``l_ce_common``, ``l_ce_hq``), and an NR-IQA judge on the decoded image
(through the straight-through path of :meth:`gtplus_arch.iqpir_arch.IQPIRNet.decode_logits`) steers the code
choices towards better images (``l_quality``).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_arch.iqpir_arch import DualCodebookVQAutoEncoder
from gtplus_models.checkpoints import (
    check_network_type,
    checkpoint_state_dict,
    load_into,
    read_checkpoint,
)
from gtplus_models.dual_codebook_vq_model import _number
from gtplus_models.model_util import add_quality, build_ema, save_generator
from gtplus_models.options import OptionsError
from gtplus_models.synthesized_sr_model import NamedByGT

VQGAN_KEY = 'path.pretrain_network_vqgan'
# The official stage-II weights (IQPIR's CodeFormer_stage2_dual_codebook.yml; METHODS.md §2 for the quality term).
DEFAULT_FEAT_LOSS_WEIGHT = 1.0
DEFAULT_ENTROPY_LOSS_WEIGHT = 0.5
DEFAULT_QUALITY_LOSS_WEIGHT = 0.2
DEFAULT_QUALITY_TYPE = 'GTPlusQualityReward'
# The submodules whose weights stage II takes from stage I and keeps: GT codes index these codebooks, and the
# generator decodes them.
FROZEN_PARTS = ('quantize', 'quantize_aesthetic', 'generator')


def check_target_score(value, key='val.target_score'):
    """``value`` as a float in [0,1], or None when unset.

    Raises:
        OptionsError: a bool, a string or a number outside [0,1], in one line naming ``key``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise OptionsError(f'{key} must be a number in [0, 1] (the quality to restore at, e.g. 0.9), got {value!r}.')
    return float(value)


def build_frozen_vqgan(opt, device):
    """The frozen stage-I autoencoder of ``network_vqgan``, loaded from ``path.pretrain_network_vqgan``.

    Args:
        opt (dict): the parsed options; reads ``network_vqgan``, ``path.pretrain_network_vqgan`` and
            ``path.param_key_vqgan`` (default 'params_ema'; a checkpoint without it gives what it holds, e.g.
            'params' or a plain state dict).
        device (torch.device): where it runs.

    Returns:
        DualCodebookVQAutoEncoder: in eval mode, requires_grad False everywhere.

    Raises:
        OptionsError: no ``network_vqgan`` / ``path.pretrain_network_vqgan``, or another network type.
        FileNotFoundError, CheckpointError: the file is missing, unreadable or of another network.
    """
    network_opt = opt.get('network_vqgan')
    if not isinstance(network_opt, dict):
        raise OptionsError('network_vqgan is required: the stage-I DualCodebookVQAutoEncoder (same sizes as '
                           'network_g) whose codes are the targets of stage II.')
    path = (opt.get('path') or {}).get('pretrain_network_vqgan')
    if not path:
        raise OptionsError(f'{VQGAN_KEY} is required: the stage-I checkpoint (e.g. experiments/<stage I>/models/'
                           'net_g_latest.pth).')
    check_network_type(network_opt, DualCodebookVQAutoEncoder, 'network_vqgan')
    net = build_network(dict(network_opt))
    loaded = read_checkpoint(path, VQGAN_KEY)
    param_key = opt['path'].get('param_key_vqgan', 'params_ema')
    if isinstance(loaded, dict) and param_key not in loaded:
        # Stage I without EMA saves 'params' only; official files are plain state dicts.
        param_key = 'params' if isinstance(loaded.get('params'), dict) else None
    load_into(net, checkpoint_state_dict(loaded, path, VQGAN_KEY, param_key), path, VQGAN_KEY)
    get_root_logger().info(f'Frozen stage-I {type(net).__name__} loaded from {path} [{param_key or "plain"}].')
    net.to(device).eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net


def shared_tensors(net, vqgan):
    """The state-dict entries ``net`` has in common with the stage-I ``vqgan`` (encoder, both codebooks, generator).

    Raises:
        OptionsError: a shared entry of another shape: the two networks were configured at different sizes.
    """
    own, stage1 = net.state_dict(), vqgan.state_dict()
    shared = [key for key in own if key in stage1]
    reshaped = [key for key in shared if own[key].shape != stage1[key].shape]
    if reshaped:
        key = reshaped[0]
        raise OptionsError(f'network_g and network_vqgan differ in size ({len(reshaped)} tensors, e.g. {key}: '
                           f'{tuple(own[key].shape)} vs {tuple(stage1[key].shape)}); build both with the same img_size, '
                           'nf, ch_mult, res_blocks, codebook_size and emb_dim.')
    if not shared:
        raise OptionsError('network_g shares no weights with network_vqgan; network_g must be an IQPIRNet.')
    return {key: stage1[key] for key in shared}


@MODEL_REGISTRY.register()
class IQPIRModel(SRModel):
    """Trains ``network_g`` (``IQPIRNet``) to predict, from a degraded face and a quality score, the codes of both
    stage-I codebooks.

    Each batch gives ``lq`` and ``gt`` ([B,3,H,W] RGB [0,1], H = W = the net's ``img_size``) and ``score`` ([B] the
    GT's quality in [0,1], e.g. from ``GTPlusScoredBlindDataset``); the net is conditioned on the GT's own score. The
    loss, logged term by term:

    - ``l_feat``: ``mean((sg[common(c1) + fuse_weight * HQ+(c2)] - lq_feat)^2) * feat_loss_weight``, where c1, c2 are
      the GT codes of the frozen ``network_vqgan`` (its encoder latent's nearest code in each codebook, for every
      sample whatever its score) and ``lq_feat`` is the encoder latent plus the score embedding;
    - ``l_ce_common`` / ``l_ce_hq``: cross-entropy of each head's logits against c1 / c2, times
      ``entropy_loss_weight``;
    - ``l_quality``: ``-quality_loss_weight * reward(clamp(out, 0, 1))``, the judge of ``train.quality_opt``
      (larger reward = better) on the decoded image, from iteration ``quality_start_iter`` on; its raw scores are
      logged under the metric names (e.g. ``niqe``). Before that iteration nothing is decoded.

    Options:
        network_g (dict): ``IQPIRNet``; its codebooks and generator are frozen (``fix_modules``).
        network_vqgan (dict): the stage-I ``DualCodebookVQAutoEncoder``, the same sizes; loaded from
            ``path.pretrain_network_vqgan`` (``path.param_key_vqgan``, default 'params_ema', falling back to what
            the file holds), frozen, never saved. Without ``path.pretrain_network_g``, net_g (and its EMA) start
            from its weights: encoder, both codebooks and generator (one key from stage I to stage II).
        train.feat_loss_weight (float): default 1.0 (official); 0 drops the term.
        train.entropy_loss_weight (float): default 0.5 (official); 0 drops both terms.
        train.quality_opt (dict, optional): a loss mapping whose module returns ``(reward, raw_scores)`` for an image
            batch in [0,1], e.g. ``{type: GTPlusQualityReward, metrics: [{name: niqe, weight: 1.0}]}`` (``type``
            defaults to GTPlusQualityReward).
        train.quality_loss_weight (float): default 0.2 (METHODS.md: 0.15-0.2).
        train.quality_start_iter (int): first iteration (1-based, inclusive) with the quality loss; default 0.
        train.ema_decay (float): as SRModel (``net_g_ema``, saved as ``params_ema``; official 0.995).
        train.optim_g (dict): over net_g's trainable parameters only. train.scheduler (dict, optional).
        val.target_score (float, optional): the quality in [0,1] validation and ``test`` restore at; unset: the
            batch's ``score``, else 1.0.

    Departure from the official code: the official judge (MUSIQ, TOPIQ, MANIQA) received images outside [0,1]
    (pyiqa expects [0,1]); here the output is clamped to [0,1] first. The official quality term
    ``relu(1 - MUSIQ) * w`` is ``-w * reward`` here, the reward of any configured judge. The GT codes are always
    computed on the fly by ``network_vqgan`` (the official options can also read precomputed code files,
    ``latent_gt_path``), so a stage-I checkpoint is all stage II needs.
    """

    def __init__(self, opt):
        # Checked before anything is built, so that a bad value stops a run at once, in training and testing.
        self.target_score = check_target_score((opt.get('val') or {}).get('target_score'))
        super().__init__(opt)

    def init_training_settings(self):
        logger = get_root_logger()
        train_opt = self.opt['train']
        self.net_vqgan = build_frozen_vqgan(self.opt, self.device)
        bare = self.get_bare_model(self.net_g)
        stage1 = shared_tensors(bare, self.net_vqgan)
        if self.opt['path'].get('pretrain_network_g') is None:
            with torch.no_grad():
                own = bare.state_dict()
                for key, value in stage1.items():
                    own[key].copy_(value)
            logger.info(f'network_g starts from the stage-I weights of {VQGAN_KEY}: {len(stage1)} tensors copied '
                        '(encoder, both codebooks, generator).')
        else:
            own = bare.state_dict()
            differ = [key for key in stage1 if key.split('.')[0] in FROZEN_PARTS and not torch.equal(
                own[key].cpu(), stage1[key].cpu())]
            if differ:
                logger.warning(f'the codebooks or generator of path.pretrain_network_g differ from those of '
                               f'{VQGAN_KEY} ({len(differ)} tensors, e.g. {differ[0]}): the GT codes then index '
                               'codebooks net_g does not decode with. Was it trained on another stage I?')

        self.net_g.train()
        self.ema_decay = _number('train.ema_decay', train_opt.get('ema_decay', 0))
        build_ema(self, self.ema_decay)  # after the stage-I copy: the EMA starts from those weights

        self.feat_loss_weight = _number('train.feat_loss_weight',
                                        train_opt.get('feat_loss_weight', DEFAULT_FEAT_LOSS_WEIGHT))
        self.entropy_loss_weight = _number('train.entropy_loss_weight',
                                           train_opt.get('entropy_loss_weight', DEFAULT_ENTROPY_LOSS_WEIGHT))
        self.quality_loss_weight = _number('train.quality_loss_weight',
                                           train_opt.get('quality_loss_weight', DEFAULT_QUALITY_LOSS_WEIGHT))
        start = _number('train.quality_start_iter', train_opt.get('quality_start_iter', 0))
        if start != int(start):
            raise OptionsError(f'train.quality_start_iter must be a whole number, got {start!r}.')
        self.quality_start_iter = int(start)
        self.quality_judge = self.build_quality_judge(train_opt.get('quality_opt'))
        self.setup_optimizers()
        if train_opt.get('scheduler'):  # basicsr's setup_schedulers requires one; a constant rate needs none
            self.setup_schedulers()

    def build_quality_judge(self, quality_opt):
        """The frozen judge of ``train.quality_opt`` on ``self.device``, or None without one.

        Args:
            quality_opt (dict | None): a registered loss mapping; without ``type``, a GTPlusQualityReward.
        """
        if not quality_opt:
            return None
        if not isinstance(quality_opt, dict):
            raise OptionsError(f'train.quality_opt must be a mapping such as {{type: {DEFAULT_QUALITY_TYPE}, '
                               f'metrics: [{{name: niqe, weight: 1.0}}]}}, got {quality_opt!r}.')
        quality_opt = dict(quality_opt)
        quality_opt.setdefault('type', DEFAULT_QUALITY_TYPE)
        if quality_opt['type'] == DEFAULT_QUALITY_TYPE:
            quality_opt.setdefault('device', str(self.device))  # its IQA nets are built there
        judge = build_loss(quality_opt).to(self.device).eval()
        for param in judge.parameters():
            param.requires_grad_(False)  # gradients reach the image only
        # A judge that cannot score the network's images (NIQE under 96 pixels) would otherwise fail only at
        # quality_start_iter, perhaps a day into the run.
        size = getattr(self.get_bare_model(self.net_g), 'img_size', None)
        for metric in getattr(judge, 'iqa', ()):
            if size and hasattr(metric, 'check_input'):
                try:
                    metric.check_input(torch.zeros(1, 3, size, size, device=self.device))
                except ValueError as err:
                    raise OptionsError(f'train.quality_opt: {err}') from None
        return judge

    def setup_optimizers(self):
        """``optimizer_g`` over net_g's trainable parameters (the frozen codebooks and generator are left out)."""
        optim_opt = dict(self.opt['train']['optim_g'])  # a copy: basicsr pops 'type' from the options themselves
        trainable = [p for p in self.net_g.parameters() if p.requires_grad]
        frozen = sum(1 for p in self.net_g.parameters() if not p.requires_grad)
        get_root_logger().info(f'optim_g trains {len(trainable)} parameter tensors of network_g; {frozen} frozen '
                               '(codebooks, generator) are left out.')
        self.optimizer_g = self.get_optimizer(optim_opt.pop('type'), trainable, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    def feed_data(self, data):
        """
        Args:
            data (dict): ``lq`` [B,3,H,W] RGB in [0,1]; ``gt`` [B,3,H,W] RGB in [0,1] (training, metrics);
                ``score`` [B] the GT's quality in [0,1] (training needs it; test falls back to
                ``val.target_score`` or 1.0).
        """
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)
        score = data.get('score')
        self.score = None if score is None else torch.as_tensor(score, dtype=torch.float32).to(self.device)

    def quality_active(self, current_iter):
        """Whether iteration ``current_iter`` (1-based, as basicsr counts) has the quality loss."""
        return self.quality_judge is not None and self.quality_loss_weight > 0 and \
            current_iter >= self.quality_start_iter

    @torch.no_grad()
    def gt_codes(self):
        """The GT's codes and stage II's feature target.

        Returns:
            tuple[Tensor, Tensor, Tensor]: common and HQ+ indices [B, h*w] (int64) from the frozen stage-I
            network, and the fused code features ``common + fuse_weight * HQ+`` [B, emb_dim, h, w] read from
            net_g's (frozen) codebooks, as the official code does.
        """
        idx_common, idx_hq, _ = self.net_vqgan.code_indices(self.gt)
        net = self.get_bare_model(self.net_g)
        target = net.fuse(net.quantize.lookup(idx_common, detach=True),
                          net.quantize_aesthetic.lookup(idx_hq, detach=True))
        return idx_common.flatten(1), idx_hq.flatten(1), target

    def optimize_parameters(self, current_iter):
        if self.score is None:
            raise ValueError('IQPIRModel trains on the GT quality scores: the training batches have no "score" '
                             '(use GTPlusScoredBlindDataset with the side file of `gtplus score`).')
        idx_common, idx_hq, target = self.gt_codes()
        quality = self.quality_active(current_iter)
        self.optimizer_g.zero_grad()
        if quality:
            out, logits_common, logits_hq, lq_feat = self.net_g(self.lq, self.score)
        else:
            # No decode: the image is needed by the quality loss only.
            logits_common, logits_hq, lq_feat = self.net_g(self.lq, self.score, code_only=True)

        loss_dict = OrderedDict()
        l_total = lq_feat.new_zeros(())
        if self.feat_loss_weight > 0:
            l_feat = torch.mean((target - lq_feat)**2) * self.feat_loss_weight
            l_total = l_total + l_feat
            loss_dict['l_feat'] = l_feat
        if self.entropy_loss_weight > 0:
            # [B, tokens, N] -> [B, N, tokens]: cross_entropy wants the classes second.
            l_ce_common = F.cross_entropy(logits_common.permute(0, 2, 1), idx_common) * self.entropy_loss_weight
            l_ce_hq = F.cross_entropy(logits_hq.permute(0, 2, 1), idx_hq) * self.entropy_loss_weight
            l_total = l_total + l_ce_common + l_ce_hq
            loss_dict['l_ce_common'] = l_ce_common
            loss_dict['l_ce_hq'] = l_ce_hq
        if quality:
            l_total = add_quality(self.quality_judge, self.quality_loss_weight, out, l_total, loss_dict)
        l_total.backward()
        self.optimizer_g.step()

        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def test(self):
        """Restores ``self.lq`` into ``self.output`` ([B,3,H,W], nominally [0,1], not clamped) at the target score:
        ``val.target_score`` if set, else the batch's ``score``, else 1.0."""
        net = self.net_g_ema if getattr(self, 'net_g_ema', None) is not None else self.net_g
        score = self.target_score
        if score is None:
            score = self.score if getattr(self, 'score', None) is not None else 1.0
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq, score)[0]
        net.train(was_training)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        # SRModel names each result after lq_path; GTPlusScoredBlindDataset gives gt_path alone.
        super().nondist_validation(NamedByGT(dataloader), current_iter, tb_logger, save_img)

    def save(self, epoch, current_iter):
        # The frozen stage-I network is not saved: it is the user's file, named by path.pretrain_network_vqgan.
        save_generator(self, current_iter)
        self.save_training_state(epoch, current_iter)


__all__ = ['DEFAULT_ENTROPY_LOSS_WEIGHT', 'DEFAULT_FEAT_LOSS_WEIGHT', 'DEFAULT_QUALITY_LOSS_WEIGHT', 'IQPIRModel',
           'build_frozen_vqgan', 'check_target_score', 'shared_tensors']
