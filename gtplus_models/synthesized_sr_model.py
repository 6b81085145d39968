"""SynthesizedSRModel: fine-tune any basicsr SR network on (LQ, HR) pairs that a synthesizer makes online from HR.

Pairs are made as Real-ESRGAN makes them: batched on the model's device inside the model, never per sample in the
data-loader workers. The synthesizer is any registered one (``BicubicSynthesizer``, ``RealESRGANSynthesizer``,
``UndertrainedReconstructionSynthesizer``, ...), the same block ``gtplus synthesize`` reads, so online and offline
pairs agree.
"""
import numpy as np
import torch
from basicsr.models.sr_model import SRModel
from basicsr.models.swinir_model import SwinIRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from gtplus_models.options import walk_datasets
from gtplus_models.synthesis import SYNTH_KEY, load_synthesizer

# The two streams of per-pair seeds: training pairs are indexed by iteration, validation pairs by their position in
# the validation set (the same pairs at every validation, so the metric compares the network and nothing else).
TRAIN_STREAM, VAL_STREAM = 0, 1


def pair_seed(manual_seed, rank, stream, index):
    """The seed of one synthesized batch: a 64-bit hash of (manual_seed, rank, stream, index).

    numpy's ``SeedSequence`` mixes the four numbers, so nearby iterations or seeds give unrelated streams (a sum
    such as manual_seed + iteration would give run A's iteration 2 the pairs of run B's iteration 1), and each rank
    of a multi-GPU run draws its own degradations.

    Args:
        manual_seed (int): the option file's ``manual_seed``.
        rank (int): the process rank (0 on one device).
        stream (int): TRAIN_STREAM or VAL_STREAM.
        index (int): the iteration (training) or the image index (validation).

    Returns:
        int: in [0, 2**63).
    """
    state = np.random.SeedSequence([int(manual_seed), int(rank), int(stream), int(index)]).generate_state(2)
    return (int(state[0]) << 32 | int(state[1])) >> 1


class NamedByGT:
    """A validation loader whose items carry ``lq_path`` (= ``gt_path`` when the data is HR only): basicsr's
    ``nondist_validation`` names each image by ``lq_path`` before it feeds the data."""

    def __init__(self, loader):
        self.loader = loader
        self.dataset = loader.dataset

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for data in self.loader:
            if 'lq_path' not in data and 'gt_path' in data:
                data = dict(data, lq_path=data['gt_path'])
            yield data


@MODEL_REGISTRY.register()
class SynthesizedSRModel(SRModel):
    """basicsr's SRModel, whose training LQ is synthesized from the HR batch by a frozen synthesizer.

    ``feed_data`` takes ``gt`` (Tensor[B,3,H,W], RGB in [0,1]; H, W multiples of ``scale``) and makes
    ``lq = synth(gt)`` (Tensor[B,3,H/scale,W/scale], RGB in [0,1]) on ``self.device``, with every random draw from
    a ``torch.Generator`` seeded by :func:`pair_seed` from ``manual_seed`` and the iteration: the same option file
    gives the same pairs, and a resumed run (``--auto_resume``) makes the pairs the uninterrupted run made. Data that
    carries ``lq`` (validation on a real LR/HR pair, e.g. a PairedImageDataset on two LMDBs) is used as it is.
    Validation on HR-only data synthesizes its LQ with seeds fixed per image.

    Everything else is SRModel: the losses (``train.pixel_opt``, ``train.perceptual_opt``), EMA,
    ``path.pretrain_network_g`` for fine-tuning, saving, basicsr's metrics and ``calculate_pyiqa``. Any basicsr SR
    network works as ``network_g`` (EDSR, RRDBNet, SwinIR, MSRResNet); with a ``window_size`` (SwinIR) the test
    pads the LQ to a multiple of it, as basicsr's SwinIRModel does.

    Options:
        network_synth (dict): the synthesizer block, ``{type: <registered Synthesizer>, ...}`` (required in
            training). Its ``scale`` must equal ``scale``.
        path.pretrain_network_synth (str): the weights of the synthesizer's learned part (its ``weights_module()``),
            e.g. a ReconstructionModel snapshot ``net_g_epoch8.pth``; required exactly when the synthesizer has one.
            The synthesizer is frozen, in eval mode, never wrapped in DDP and never saved.
        datasets.train: HR only, e.g. ``GTPlusSingleHRDataset``; ``gt_size`` must be a multiple of ``scale`` and at
            least the synthesizer's ``min_size()``.

    Data: ``gt`` [B,3,H,W] (and optionally ``lq`` [B,3,H/scale,W/scale]), RGB in [0,1].
    """

    # The option key of the synthesizer block; its weights are path.pretrain_<synth_key>. ReconstructionModel has its
    # own (network_first_stage).
    synth_key = SYNTH_KEY

    def __init__(self, opt):
        self.net_synth = None
        self.synth_iter = 1  # the iteration whose pair the next training feed_data makes
        self.lq_key = None  # (stream, index) of the synthesized self.lq, None for an LQ from the data
        self._val_index = None  # the image index inside nondist_validation, else None
        super().__init__(opt)
        if self.net_synth is None and self.synth_block() is not None:
            self.net_synth = self.build_synth()  # testing: HR-only test data needs it too

    def synth_block(self):
        """The synthesizer's option block, or None when the option file has none."""
        return self.opt.get(self.synth_key)

    def build_synth(self):
        """The frozen synthesizer of :meth:`synth_block`, with ``path.pretrain_<key>`` weights, on self.device."""
        block = self.synth_block()
        weights = (self.opt.get('path') or {}).get(f'pretrain_{self.synth_key}')
        synth = load_synthesizer(dict(block), weights, self.device, opt_key=self.synth_key,
                                 weights_key=f'path.pretrain_{self.synth_key}')
        scale = self.opt.get('scale', synth.scale)
        if synth.scale != scale:
            raise ValueError(f'{self.synth_key} ({type(synth).__name__}) downscales by {synth.scale} but scale is '
                             f'{scale}: set both to the factor between your GT and LQ images.')
        get_root_logger().info(f'{self.synth_key} [{type(synth).__name__}] loaded'
                               f'{f" with weights {weights}" if weights else ""}: {synth.provenance()}')
        return synth

    def init_training_settings(self):
        if self.synth_block() is None:
            raise ValueError(f'{type(self).__name__} needs {self.synth_key}: the synthesizer that makes the training '
                             'LQ from the HR batch (e.g. {type: UndertrainedReconstructionSynthesizer, ...}).')
        self.net_synth = self.build_synth()
        self.check_train_crops()
        super().init_training_settings()

    def check_train_crops(self):
        """Refuse training crops the synthesizer cannot degrade: not a multiple of scale, or too small."""
        scale, smallest = self.net_synth.scale, self.net_synth.min_size()
        for key, entry in walk_datasets('datasets.train', self.opt['datasets']['train']):
            gt_size = entry.get('gt_size')
            if not isinstance(gt_size, int):
                continue
            if gt_size % scale:
                raise ValueError(f'{key}.gt_size is {gt_size}, not a multiple of scale {scale}: the LQ would not be '
                                 f'whole pixels; use {gt_size // scale * scale} or {(gt_size // scale + 1) * scale}.')
            if gt_size < smallest:
                raise ValueError(f'{key}.gt_size is {gt_size}, below the smallest HR side {self.synth_key} '
                                 f'({type(self.net_synth).__name__}) can degrade with these options: {smallest}.')

    def resume_training(self, resume_state):
        """basicsr's resume, and the pair counter moved to the iteration after the state's."""
        super().resume_training(resume_state)
        self.synth_iter = resume_state['iter'] + 1

    # ------------------------------------------------------------------------------------------------ #

    def synthesize(self, hr, stream, index):
        """``net_synth(hr)`` with a generator on self.device seeded by :func:`pair_seed`.

        Args:
            hr (Tensor): [B,3,H,W] RGB in [0,1] on self.device, H and W multiples of scale.
            stream (int), index (int): which pair (see :func:`pair_seed`).

        Returns:
            Tensor: [B,3,H/scale,W/scale] RGB in [0,1].
        """
        if self.net_synth is None:
            raise KeyError(f"{type(self).__name__}: the data has no 'lq' and the option file no {self.synth_key} to "
                           'make it from the HR.')
        generator = torch.Generator(device=self.device)
        generator.manual_seed(pair_seed(self.opt.get('manual_seed') or 0, self.opt.get('rank', 0), stream, index))
        self.lq_key = (stream, index)
        return self.net_synth(hr, generator)

    def feed_data(self, data):
        """``gt`` -> self.gt and the synthesized self.lq; with ``lq`` in the data, both as they are.

        In validation the HR is first trimmed to a multiple of scale (training crops are checked up front).
        """
        if 'lq' in data:
            super().feed_data(data)
            self.lq_key = None
            return
        if 'gt' not in data:
            raise KeyError(f"{type(self).__name__} needs 'gt' (HR) or 'lq' in the data.")
        hr = data['gt'].to(self.device)
        if self._val_index is not None:
            scale = self.net_synth.scale if self.net_synth is not None else 1
            hr = hr[..., :hr.shape[-2] // scale * scale, :hr.shape[-1] // scale * scale]
            stream, index = VAL_STREAM, self._val_index
            self._val_index += 1
        else:
            stream, index = TRAIN_STREAM, self.synth_iter
        self.gt = self.hr = hr  # self.hr: the source of the pair, kept where a subclass changes the target
        self.lq = self.synthesize(hr, stream, index)

    def sync_pair(self, current_iter):
        """Make sure self.lq is iteration ``current_iter``'s pair, and count on to the next iteration.

        basicsr's loop feeds the data of iteration i and then trains on it, so feed_data already made the right
        pair; a loop that feeds data out of that order gets the pair re-made here rather than the wrong seed.
        """
        if self.lq_key is not None and self.lq_key != (TRAIN_STREAM, current_iter):
            self.lq = self.synthesize(self.hr, TRAIN_STREAM, current_iter)
        self.synth_iter = current_iter + 1

    def optimize_parameters(self, current_iter):
        self.sync_pair(current_iter)
        super().optimize_parameters(current_iter)

    def test(self):
        # SwinIR's shifted windows need LQ sides that are multiples of window_size (a real LR rarely has them):
        # reflect-pad and crop back, as basicsr's SwinIRModel.test does for the network_g it reads the same way.
        if (self.opt.get('network_g') or {}).get('window_size'):
            SwinIRModel.test(self)
        else:
            super().test()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """basicsr's validation, on HR-only data too: its LQ synthesized with one fixed seed per image."""
        self._val_index = 0
        try:
            super().nondist_validation(NamedByGT(dataloader), current_iter, tb_logger, save_img)
        finally:
            self._val_index = None
