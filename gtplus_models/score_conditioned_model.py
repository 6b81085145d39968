"""ScoreConditionedModel: trains a :class:`gtplus_arch.score_conditioned_arch.ScoreConditionedRestorer` (any BasicSR
restorer plus IQPIR's score embedding) on the GT's own quality score, with an optional NR-IQA quality loss."""
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_arch.score_conditioned_arch import ScoreConditionedRestorer
from gtplus_models.checkpoints import checkpoint_state_dict, load_into, read_checkpoint
from gtplus_models.dual_codebook_vq_model import (
    DEFAULT_PIXEL_OPT,
    _number,
    check_perceptual_weights,
)
from gtplus_models.iqpir_model import (
    DEFAULT_QUALITY_LOSS_WEIGHT,
    IQPIRModel,
    check_target_score,
)
from gtplus_models.model_util import add_perceptual, add_quality, build_ema
from gtplus_models.options import OptionsError
from gtplus_models.synthesized_sr_model import NamedByGT

DEFAULT_TARGET_SCORE = 1.0  # inference without val.target_score or a batch score asks for the best quality
# Not pretrain_network_*: basicsr pairs each such key with a network_* block (and resets them all on resume).
RESTORER_KEY = 'path.pretrain_restorer'


@MODEL_REGISTRY.register()
class ScoreConditionedModel(SRModel):
    """basicsr's SRModel for a score-conditioned restorer: ``output = net_g(lq, score)``.

    Each batch gives ``lq`` and ``gt`` ([B,3,H,W] RGB [0,1]; ``gt`` ``scale`` times larger for an SR restorer) and
    ``score`` ([B] in [0,1], 1 = best: the GT's NR-IQA score, e.g. from ``GTPlusScoredBlindDataset``). Training
    conditions on the GT's own score, so the embedding learns what each quality level of GT looks like; at inference
    a target score picks the level. The generator loss, logged term by term:

    - ``l_pix``: ``train.pixel_opt`` (default L1, weight 1);
    - ``l_percep`` / ``l_style``: ``train.perceptual_opt`` if given (a missing VGG file is a one-line error);
    - ``l_quality = -quality_loss_weight * reward(clamp(output, 0, 1))`` with ``train.quality_opt`` (a loss mapping,
      ``{type: GTPlusQualityReward, metrics: [{name: niqe, weight: 1.0}]}``, frozen; the judge always sees
      [0,1]; a judge may return the reward alone or ``(reward, raw scores)``), from iteration
      ``train.quality_start_iter`` (1-based, inclusive; default 0: from the start) on; each metric's raw batch mean
      is logged under its name, as IQPIRModel does.

    Options:
        train.quality_loss_weight (float): default 0.2 (as IQPIRModel).
        train.ema_decay (float): as SRModel (``net_g_ema``, saved as ``params_ema``).
        path.pretrain_restorer (str): a bare restorer checkpoint (basicsr ``params``/``params_ema``, plain or
            ``module.``-prefixed) loaded into ``net_g.restorer`` (``path.strict_load_restorer``, default true;
            ``path.param_key_restorer``, default 'params', else what the file holds); the score embedding stays zero,
            so training starts from exactly the pretrained restorer. ``path.pretrain_network_g`` loads a checkpoint
            of this wrapper (its keys carry the ``restorer.`` prefix); give one of the two. On resume
            (``--auto_resume``), basicsr sets ``pretrain_network_g`` to the saved wrapper and this key is ignored.
        val.target_score (float in [0,1]): the score ``test`` and validation condition on; without it the batch's
            own score, else 1.0.

    Validation results are named after ``lq_path``, or ``gt_path`` when the set gives none.
    """

    def __init__(self, opt):
        path_opt = opt['path']
        if path_opt.get('pretrain_network_g') and path_opt.get('pretrain_restorer') and \
                not path_opt.get('resume_state'):
            raise OptionsError(f'path.pretrain_network_g (a ScoreConditionedRestorer checkpoint) and {RESTORER_KEY} '
                               '(a bare restorer checkpoint) are both set; give one.')
        self.target = check_target_score((opt.get('val') or {}).get('target_score'))
        self.score = None
        super().__init__(opt)
        if not self.is_train:
            self.load_pretrained_restorer()

    def load_pretrained_restorer(self):
        """Load ``path.pretrain_restorer`` (if set, and not resuming) into the wrapped restorer of ``net_g``.

        Raises:
            FileNotFoundError, CheckpointError: one line naming the key and the file (missing, unreadable, or the
                checkpoint of another network).
        """
        path_opt = self.opt['path']
        load_path = path_opt.get('pretrain_restorer')
        if load_path is None or path_opt.get('pretrain_network_g'):
            return  # a wrapper checkpoint (a resumed run's) holds the restorer already
        net = self.get_bare_model(self.net_g)
        if not isinstance(net, ScoreConditionedRestorer):
            raise OptionsError(f'{RESTORER_KEY} needs network_g of type ScoreConditionedRestorer, got '
                               f'{type(net).__name__}.')
        # As gtplus's load_network (any checkpoint layout; one-line errors naming the key), under this key's name.
        loaded = read_checkpoint(load_path, RESTORER_KEY)
        param_key = path_opt.get('param_key_restorer', 'params')
        if isinstance(loaded, dict) and param_key not in loaded:
            param_key = None  # a plain state dict, or params without params_ema: take what is there
        state = checkpoint_state_dict(loaded, load_path, RESTORER_KEY, param_key)
        get_root_logger().info(f'Loading the {type(net.restorer).__name__} restorer from {load_path} '
                               f'[{param_key or "plain"}].')
        load_into(net.restorer, state, load_path, RESTORER_KEY, path_opt.get('strict_load_restorer', True),
                  before_load=self._print_different_keys_loading)

    def init_training_settings(self):
        # Before the EMA copy below, so that net_g_ema starts from the pretrained restorer too.
        self.load_pretrained_restorer()
        train_opt = self.opt['train']
        self.net_g.train()
        self.ema_decay = _number('train.ema_decay', train_opt.get('ema_decay', 0))
        build_ema(self, self.ema_decay)

        perceptual_opt = train_opt.get('perceptual_opt')
        if perceptual_opt:
            check_perceptual_weights(perceptual_opt)
        self.cri_pix = build_loss(dict(train_opt.get('pixel_opt') or DEFAULT_PIXEL_OPT)).to(self.device)
        self.cri_perceptual = build_loss(dict(perceptual_opt)).to(self.device) if perceptual_opt else None
        # IQPIR stage II's judge builder (a frozen registered loss; without a type, GTPlusQualityReward): it needs
        # only self.device, so one home serves both models.
        self.quality_reward = IQPIRModel.build_quality_judge(self, train_opt.get('quality_opt'))
        self.check_judge_input_size()
        self.quality_loss_weight = _number('train.quality_loss_weight',
                                           train_opt.get('quality_loss_weight', DEFAULT_QUALITY_LOSS_WEIGHT))
        start = _number('train.quality_start_iter', train_opt.get('quality_start_iter', 0))
        if start != int(start):
            raise OptionsError(f'train.quality_start_iter must be a whole number, got {start!r}.')
        self.quality_start_iter = int(start)
        self.setup_optimizers()
        if train_opt.get('scheduler'):  # basicsr's setup_schedulers requires one; a constant rate needs none
            self.setup_schedulers()

    def check_judge_input_size(self):
        """Refuse, at build, a judge that cannot score the training crops (NIQE needs 96 pixels a side), which would
        otherwise fail only at ``quality_start_iter``. The output is GT-sized: ``datasets.train.gt_size``."""
        size = (self.opt['datasets'].get('train') or {}).get('gt_size')
        if self.quality_reward is None or not isinstance(size, int):
            return
        for metric in getattr(self.quality_reward, 'iqa', ()):
            if hasattr(metric, 'check_input'):
                try:
                    metric.check_input(torch.zeros(1, 3, size, size, device=self.device))
                except ValueError as err:
                    raise OptionsError(f'train.quality_opt (datasets.train.gt_size {size}): {err}') from None

    def feed_data(self, data):
        """
        Args:
            data (dict): ``lq`` [B,3,h,w] and ``gt`` [B,3,H,W] (optional at test time) RGB in [0,1]; ``score`` [B]
                in [0,1] (required for training).
        """
        super().feed_data(data)
        score = data.get('score')
        self.score = None if score is None else torch.as_tensor(score, dtype=torch.float32).to(self.device)

    def quality_active(self, current_iter):
        """Whether iteration ``current_iter`` (1-based, as basicsr counts) has the quality loss."""
        return self.quality_reward is not None and self.quality_loss_weight > 0 and \
            current_iter >= self.quality_start_iter

    def optimize_parameters(self, current_iter):
        if self.score is None:
            raise ValueError('ScoreConditionedModel trains on the GT\'s own score, but the batch has no score: use '
                             'a scored dataset such as GTPlusScoredBlindDataset.')
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq, self.score)
        loss_dict = OrderedDict()
        l_total = self.cri_pix(self.output, self.gt)
        loss_dict['l_pix'] = l_total
        l_total = add_perceptual(self.cri_perceptual, self.output, self.gt, l_total, loss_dict)
        if self.quality_active(current_iter):
            l_total = add_quality(self.quality_reward, self.quality_loss_weight, self.output, l_total, loss_dict)
        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def target_score(self):
        """The score ``test`` conditions on: ``val.target_score``, else the batch's scores, else 1.0."""
        if self.target is not None:
            return self.target
        return self.score if self.score is not None else DEFAULT_TARGET_SCORE

    def test(self):
        """Restores ``self.lq`` at :meth:`target_score` into ``self.output`` (as the restorer outputs)."""
        net = self.net_g_ema if getattr(self, 'net_g_ema', None) is not None else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq, self.target_score())
        net.train(was_training)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        # SRModel names each result after lq_path; GT-only sets (GTPlusScoredBlindDataset) give gt_path alone.
        super().nondist_validation(NamedByGT(dataloader), current_iter, tb_logger, save_img)


__all__ = ['ScoreConditionedModel']
