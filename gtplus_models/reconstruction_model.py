"""ReconstructionModel: train a VQ-VAE(-2) on LR images made from HR ones, keeping snapshots at chosen epochs.

Stage 1 of the undertrained-reconstruction pipeline (METHODS.md §3): the snapshots of the first epochs are the
degradation models that ``UndertrainedReconstructionSynthesizer`` loads (VQ-VAE-2 at epoch 8 was the paper's best).
"""
import math
import os
import os.path as osp
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_models.enhanced_supervision import OFFICIAL_MSE_WEIGHT
from gtplus_models.synthesis import snapshot_label
from gtplus_models.synthesized_sr_model import SynthesizedSRModel

DEFAULT_SNAPSHOT_EPOCHS = (4, 8, 16, 32, 64)  # the paper's sweep
# rosinality's train_vqvae.py: loss = MSE(out, img) + 0.25 * latent_loss, with images in [-1,1]. On [0,1] images the
# same MSE is 4x smaller, so the pixel loss carries the factor 4 and the latent loss (computed by the arch on its
# own [-1,1] scale) keeps 0.25: the official balance and step size.
DEFAULT_PIXEL_OPT = {'type': 'MSELoss', 'loss_weight': OFFICIAL_MSE_WEIGHT, 'reduction': 'mean'}
DEFAULT_LATENT_LOSS_WEIGHT = 0.25


def iterations_per_epoch(num_images, batch_size, world_size=1, enlarge_ratio=1):
    """Iterations of one pass over the dataset: basicsr's ``num_iter_per_epoch`` (its "Require iter number per
    epoch" log line), ``ceil(num_images * enlarge_ratio / (batch_size * world_size))``.

    With a dataset that the global batch does not divide, one epoch is then the first iteration at which at least
    ``num_images * enlarge_ratio`` samples have been drawn.

    Args:
        num_images (int): ``len(train_set)``.
        batch_size (int): ``batch_size_per_gpu``.
        world_size (int): processes (GPUs).
        enlarge_ratio (int): ``dataset_enlarge_ratio``.
    """
    return math.ceil(num_images * enlarge_ratio / (batch_size * world_size))


def _snapshot_epochs(value):
    if value is None:
        return list(DEFAULT_SNAPSHOT_EPOCHS)
    if not isinstance(value, (list, tuple)) or any(isinstance(e, bool) or not isinstance(e, int) or e < 1
                                                   for e in value):
        raise ValueError(f'train.snapshot_epochs must be a list of epochs (integers >= 1), got {value!r}.')
    return sorted(set(value))


@MODEL_REGISTRY.register()
class ReconstructionModel(SynthesizedSRModel):
    """Trains ``network_g`` (VQVAE2 or VQVAE: ``net(x) -> (reconstruction, latent_loss)``) to reconstruct LR images.

    Each HR batch (``gt``, [B,3,H,W] RGB [0,1]) is downscaled by the first stage into the LR batch ``lq``
    ([B,3,H/scale,W/scale]), which is both the input and the target: loss =
    ``pixel_opt(net(lq)[0], lq) + latent_loss_weight * latent_loss``, logged as ``l_mse`` and ``l_latent``. The
    pixel loss defaults to MSE x 4 and the latent weight to 0.25, which on [0,1] images is the official
    ``MSE + 0.25 * latent`` on [-1,1] images. Data that carries ``lq`` (an LR set: a PairedImageDataset, or LR
    images given as ``lq``) is used as the LR as it is.

    At the end of each epoch listed in ``train.snapshot_epochs`` the network is written to
    ``experiments/<name>/models/net_g_epoch<k>.pth`` (basicsr's ``{'params': state_dict}``, the format
    ``path.pretrain_network_synth`` and ``--synth-weights`` load). An epoch is one pass over the training set,
    :func:`iterations_per_epoch` iterations whatever the batch size and GPU count: the snapshot of epoch k is
    written right after iteration ``k * iterations_per_epoch``, before that iteration's checkpoint, so a resumed run
    neither writes it twice nor skips it. Snapshots are written to a temporary file and renamed, so a killed run
    never leaves a truncated one.

    Options:
        scale (int): the LR factor (the paper: 4).
        network_first_stage (dict, optional): the synthesizer that makes the LR, ``{type: <registered
            Synthesizer>, ...}`` (e.g. RealESRGANSynthesizer); default ``{type: BicubicSynthesizer, scale: <scale>}``.
            Give the same block as ``first_stage`` to the UndertrainedReconstructionSynthesizer that loads the
            snapshots. Random first stages draw from a generator seeded per iteration, as SynthesizedSRModel.
            Weights, if it has any: ``path.pretrain_network_first_stage``.
        train.pixel_opt (dict): a basicsr loss, reconstruction vs LR (both [0,1]). Default
            ``{type: MSELoss, loss_weight: 4.0}``.
        train.latent_loss_weight (float): beta, the weight of the codebook commitment loss. Default 0.25.
        train.snapshot_epochs (list[int]): default [4, 8, 16, 32, 64]. Epochs beyond total_iter are logged as a
            warning at the start and never written.
        train.ema_decay: must be 0 (basicsr's EMA averages parameters only; the codebooks are buffers).
        datasets.train: HR only, e.g. GTPlusSingleHRDataset; ``gt_size`` a multiple of ``scale``.

    Validation: ``result`` is the reconstruction of the LR and ``gt`` the LR, so ``calculate_psnr`` is the
    reconstruction PSNR (HR validation images are trimmed to a multiple of scale first).
    """

    synth_key = 'network_first_stage'

    def synth_block(self):
        block = self.opt.get(self.synth_key)
        if block is not None:
            return block
        if 'scale' not in self.opt:
            raise ValueError('ReconstructionModel needs scale: the factor between the HR images and the LR images '
                             'it trains on (the paper: 4).')
        return {'type': 'BicubicSynthesizer', 'scale': self.opt['scale']}

    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        if train_opt.get('ema_decay', 0):
            raise ValueError('train.ema_decay must be 0 for ReconstructionModel: basicsr\'s EMA averages parameters '
                             'only, and the VQ-VAE codebooks are buffers (they learn by their own EMA).')
        self.net_synth = self.build_synth()
        self.check_train_crops()
        self.cri_pix = build_loss(dict(train_opt.get('pixel_opt') or DEFAULT_PIXEL_OPT)).to(self.device)
        self.latent_loss_weight = train_opt.get('latent_loss_weight', DEFAULT_LATENT_LOSS_WEIGHT)
        if isinstance(self.latent_loss_weight, bool) or not isinstance(self.latent_loss_weight, (int, float)) \
                or self.latent_loss_weight < 0:
            raise ValueError(f'train.latent_loss_weight must be a number >= 0, got {self.latent_loss_weight!r}.')
        self.snapshot_epochs = _snapshot_epochs(train_opt.get('snapshot_epochs'))
        self.iters_per_epoch = self._iterations_per_epoch()
        self._log_snapshot_plan(train_opt['total_iter'])
        self.setup_optimizers()
        self.setup_schedulers()

    def _iterations_per_epoch(self):
        """From the training set's length, as basicsr's loop computes it (the set is built once more for its
        length: building reads only the keys)."""
        from basicsr.data import build_dataset
        dataset_opt = self.opt['datasets']['train']
        train_set = build_dataset(dict(dataset_opt))
        return iterations_per_epoch(len(train_set), dataset_opt['batch_size_per_gpu'], self.opt.get('world_size', 1),
                                    dataset_opt.get('dataset_enlarge_ratio', 1))

    def _log_snapshot_plan(self, total_iter):
        logger = get_root_logger()
        at = ', '.join(f'{epoch} (iter {epoch * self.iters_per_epoch})' for epoch in self.snapshot_epochs)
        logger.info(f'ReconstructionModel: {self.iters_per_epoch} iterations per epoch; snapshots at epochs {at}.')
        beyond = [epoch for epoch in self.snapshot_epochs if epoch * self.iters_per_epoch > total_iter]
        if beyond:
            logger.warning(f'train.snapshot_epochs {beyond} end after train.total_iter ({total_iter}): those snapshots '
                           f'will not be written (epoch {beyond[-1]} needs total_iter >= '
                           f'{beyond[-1] * self.iters_per_epoch}).')

    def feed_data(self, data):
        super().feed_data(data)
        self.gt = self.lq  # the target of a reconstruction is its input

    def optimize_parameters(self, current_iter):
        self.sync_pair(current_iter)
        self.gt = self.lq
        self.optimizer_g.zero_grad()
        self.output, latent_loss = self.net_g(self.lq)
        l_mse = self.cri_pix(self.output, self.lq)
        l_latent = self.latent_loss_weight * latent_loss.mean()
        (l_mse + l_latent).backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(OrderedDict(l_mse=l_mse, l_latent=l_latent))
        if current_iter % self.iters_per_epoch == 0 and current_iter // self.iters_per_epoch in self.snapshot_epochs:
            self.save_snapshot(current_iter // self.iters_per_epoch)

    @master_only
    def save_snapshot(self, epoch):
        """Write ``models/net_g_epoch<epoch>.pth`` (basicsr's format), atomically."""
        label = snapshot_label(epoch)
        path = osp.join(self.opt['path']['models'], f'net_g_{label}.pth')
        self.save_network(self.net_g, 'net_g', f'{label}.tmp')
        os.replace(osp.join(self.opt['path']['models'], f'net_g_{label}.tmp.pth'), path)
        get_root_logger().info(f'Snapshot of epoch {epoch} saved: {path}')

    def test(self):
        self.net_g.eval()
        with torch.no_grad():
            self.output = self.net_g(self.lq)[0]
        self.net_g.train()
