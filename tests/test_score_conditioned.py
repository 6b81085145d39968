"""ScoreConditionedRestorer / ScoreConditionedModel: IQPIR's score conditioning wrapped around GTPlusNAFNet and
basicsr's MSRResNet. A fresh wrapper is the bare restorer bit for bit; trained on GT whose sharpness follows the
score, the score knob moves the output the way the GT moved, against an unconditioned control; the bins; the quality
loss from quality_start_iter; save / load."""
import os

import pytest
import torch
from test_dual_codebook_vq_model import build  # an option dict's model, as basicsr's training builds it
from torch.nn import functional as F

import gtplus_models  # noqa: F401  (registers every gtplus component)
from gtplus_arch.score_conditioned_arch import ScoreConditionedRestorer

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY_NAF = {'type': 'GTPlusNAFNet', 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1], 'dec_blk_nums': [1, 1]}
TINY_MSRRESNET = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 2}
# (restorer, the feature its score shift is added to, LQ side); GT is 16x16 (MSRResNet upscales x2).
ARCHS = {'nafnet': (TINY_NAF, 'middle_blks', 16), 'msrresnet': (TINY_MSRRESNET, 'body', 8)}
GT_SIZE = 16
HIGH, LOW = 0.9, 0.1


@pytest.fixture(scope='module')
def scored_folder(tmp_path_factory):
    """Two random 96x96 GT PNGs (NIQE's least size) and their `gtplus score` side file (the option checks and the
    validation read them; training tests feed their own batches)."""
    from data_helpers import make_folder
    from test_scored_blind_dataset import write_scores
    folder, _ = make_folder(str(tmp_path_factory.mktemp('sc_gt') / 'gt'), num=2, height=96, width=96)
    write_scores(folder, {f'{i:03d}': {'musiq': 10. * i} for i in range(2)}, ensemble=False, kind='folder')
    return folder


def wrapped(arch):
    restorer, feature, _ = ARCHS[arch]
    return {'type': 'ScoreConditionedRestorer', 'restorer': dict(restorer), 'feature': feature, 'num_bins': 10}


def options(data_root, network, name='sc', path=None, val=None, **train):
    dataset = {'name': 'scored', 'type': 'GTPlusScoredBlindDataset', 'dataroot_gt': data_root,
               'io_backend': {'type': 'disk'}, 'score_name': 'musiq', 'gt_size': GT_SIZE, 'use_hflip': False,
               'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1}
    opt = {
        'name': name, 'model_type': 'ScoreConditionedModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': dataset}, 'network_g': network,
        'path': dict({'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}, **(path or {})),
        'train': dict({'optim_g': {'type': 'Adam', 'lr': 1e-2, 'betas': [0.9, 0.99]}, 'total_iter': 10,
                       'warmup_iter': -1, 'pixel_opt': {'type': 'MSELoss', 'loss_weight': 1.0},
                       'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}}, **train),
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 10, 'use_tb_logger': False},
    }
    if val is not None:
        opt['val'] = dict({'val_freq': 1, 'save_img': False}, **val)
    return opt


def sharp_and_blurred(seed=0):
    """A detailed GT [1,3,16,16] in [0,1], its 5x5 box-blurred version, and an LQ made from it ([1,3,16,16] for
    NAFNet; the 8x8 area-downscaled one for MSRResNet)."""
    generator = torch.Generator().manual_seed(seed)
    sharp = torch.rand(1, 3, GT_SIZE, GT_SIZE, generator=generator)
    blurred = F.avg_pool2d(F.pad(sharp, (2, 2, 2, 2), mode='reflect'), 5, stride=1)
    return sharp, blurred


def knob_batch(arch):
    """One LQ twice: its GT is the sharp image at score 0.9 and the blurred one at score 0.1."""
    sharp, blurred = sharp_and_blurred()
    lq_size = ARCHS[arch][2]
    lq = F.interpolate(blurred, size=lq_size, mode='area') if lq_size != GT_SIZE else blurred
    return {'lq': torch.cat([lq, lq]), 'gt': torch.cat([sharp, blurred]), 'score': torch.tensor([HIGH, LOW]),
            'lq_path': ['a.png', 'a.png']}, sharp


def mse(a, b):
    return F.mse_loss(a, b).item()


def sharpness(output, sharp, blurred):
    """Where ``output`` lies on the line from the blurred GT (0) to the sharp GT (1), by projection."""
    direction = sharp - blurred
    return ((output - blurred) * direction).sum().item() / (direction * direction).sum().item()


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_a_fresh_wrapper_is_the_bare_restorer_bit_for_bit(arch):
    from basicsr.archs import build_network
    restorer, feature, lq_size = ARCHS[arch]
    torch.manual_seed(1)
    bare = build_network(dict(restorer)).eval()
    net = ScoreConditionedRestorer(dict(restorer), feature).eval()
    # The restorer's own state dict loads strictly under the restorer. prefix (DDP's module. prefix is stripped).
    net.load_restorer_state_dict({f'module.{k}': v for k, v in bare.state_dict().items()}, strict=True)
    assert set(net.state_dict()) == {f'restorer.{k}' for k in bare.state_dict()} | {'score_embed.weight'}
    # Channels found by the dry run: NAFNet's bottom is width * 2^levels, MSRResNet's body num_feat wide.
    assert net.channels == {'nafnet': 8 * 4, 'msrresnet': 8}[arch]
    assert net.score_embed.weight.shape == (10, net.channels)
    x = torch.rand(2, 3, lq_size, lq_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = bare(x)
        for score in (None, 0.0, 0.37, 1.0, torch.tensor([0.05, 0.95])):
            assert torch.equal(net(x, score), expected), score


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_tiling_treats_the_wrapper_like_its_restorer(arch):
    from basicsr.archs import build_network

    from gtplus_models.tools.tiling import size_rule
    restorer, feature, _ = ARCHS[arch]
    net = ScoreConditionedRestorer(dict(restorer), feature)
    assert size_rule(net) == size_rule(build_network(dict(restorer)))
    assert getattr(net, 'upscale', None) == restorer.get('upscale')


def test_an_unknown_feature_is_a_value_error_naming_it_and_some_valid_names():
    with pytest.raises(ValueError) as info:
        ScoreConditionedRestorer(dict(TINY_NAF), 'middle_blocks')
    message = str(info.value)
    assert "'middle_blocks'" in message and 'middle_blks' in message and 'intro' in message and '\n' not in message


def test_score_bins_and_the_score_range():
    from gtplus_arch.iqpir_arch import score_bin
    net = ScoreConditionedRestorer(dict(TINY_MSRRESNET), 'body', channels=8)  # given channels: no dry run
    scores = torch.tensor([0.0, 0.5, 0.99, 1.0])
    assert net.score_bin(scores).tolist() == [0, 5, 9, 9]  # 1.0 lands in the top bin, not past the table
    assert score_bin(scores, 10).tolist() == [0, 5, 9, 9]  # the one rule IQPIRNet uses too
    x = torch.rand(2, 3, 8, 8)
    for bad in (1.5, -0.1, float('nan'), torch.tensor([0.5, 1.01])):
        with pytest.raises(ValueError, match=r'\[0, 1\]'):
            net(x, bad)
    with pytest.raises(ValueError, match='one per sample'):
        net(x, torch.tensor([0.5, 0.5, 0.5]))


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_the_score_knob_moves_the_output_the_way_the_gt_moved(tmp_path, scored_folder, arch):
    """Same LQ twice, sharp GT at score 0.9 and blurred GT at 0.1. The wrapped restorer learns both (0.9 gives the
    sharper output); the bare restorer (SRModel, same steps, same data) can only learn their average."""
    data, sharp = knob_batch(arch)
    _, blurred = sharp_and_blurred()
    lq = data['lq'][:1]
    outputs = {}
    for kind, network, model_type in (('wrapped', wrapped(arch), 'ScoreConditionedModel'),
                                      ('control', dict(ARCHS[arch][0]), 'SRModel')):
        opt = options(scored_folder, network, name=f'{arch}_{kind}')
        opt['model_type'] = model_type
        model = build(tmp_path, opt)
        model.feed_data(data)
        for it in range(1, 61):
            model.optimize_parameters(it)
        with torch.no_grad():
            if kind == 'wrapped':
                outputs['high'], outputs['low'] = model.net_g(lq, HIGH), model.net_g(lq, LOW)
            else:
                outputs['control'] = model.net_g(lq)
    position = {key: sharpness(value, sharp, blurred) for key, value in outputs.items()}
    error = {key: mse(value, sharp) for key, value in outputs.items()}
    assert mse(outputs['high'], outputs['low']) > 1e-3, (position, error)
    assert position['high'] > position['control'] > position['low'], position
    assert error['high'] < error['control'] < error['low'], error


class RecordingJudge(torch.nn.Module):
    """Stands in for GTPlusQualityReward: reward = mean brightness (differentiable); records each input's range."""

    def __init__(self):
        super().__init__()
        self.ranges = []

    def forward(self, img, ref=None):
        self.ranges.append((img.min().item(), img.max().item()))
        return img.mean(), {'fake': img.mean().detach()}


def test_the_quality_loss_starts_at_quality_start_iter_on_clamped_outputs_and_trains_the_embedding(
        tmp_path, scored_folder):
    from gtplus_models.options import OptionsError
    quality_opt = {'type': 'GTPlusQualityReward', 'metrics': [{'name': 'niqe', 'weight': 1.0}]}
    # No pixel loss weight: any gradient on the embedding comes from the quality loss.
    opt = options(scored_folder, wrapped('nafnet'), name='sc_quality', quality_opt=quality_opt,
                  quality_start_iter=3, quality_loss_weight=0.5,
                  pixel_opt={'type': 'L1Loss', 'loss_weight': 0.0})
    # NIQE cannot score 16-pixel crops: refused at build, not at quality_start_iter.
    with pytest.raises(OptionsError, match='gt_size 16.*96'):
        build(tmp_path, opt)
    opt['datasets']['train']['gt_size'] = 96  # the judge is replaced below: the batches fed stay 16x16
    model = build(tmp_path, opt)
    assert type(model.quality_reward).__name__ == 'GTPlusQualityReward'  # built from the loss mapping
    judge = model.quality_reward = RecordingJudge()
    data, _ = knob_batch('nafnet')
    data['lq'] = data['lq'] * 1.6 - 0.3  # NAFNet adds its input back: outputs reach outside [0,1]
    model.feed_data(data)
    embedding = model.net_g.score_embed.weight
    for it in (1, 2):
        model.optimize_parameters(it)
        assert 'l_quality' not in model.log_dict and not judge.ranges
    before = embedding.detach().clone()
    model.optimize_parameters(3)
    assert {'l_quality', 'fake'} <= set(model.log_dict)
    assert model.log_dict['l_quality'] == pytest.approx(-0.5 * model.log_dict['fake'], rel=1e-5)
    assert model.output.min() < 0 or model.output.max() > 1  # so the clamp had work to do
    (low, high), = judge.ranges
    assert 0.0 <= low and high <= 1.0
    used = model.net_g.score_bin(data['score'])
    assert embedding.grad[used].abs().sum() > 0
    assert not torch.equal(embedding.detach()[used], before[used])


def test_save_load_round_trip_and_validation_at_the_target_score(tmp_path, scored_folder):
    from basicsr.data import build_dataset
    val = {'target_score': HIGH, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    model = build(tmp_path, options(scored_folder, wrapped('nafnet'), name='sc_save', val=val, ema_decay=0.5))
    data, _ = knob_batch('nafnet')
    model.feed_data(data)
    for it in (1, 2):
        model.optimize_parameters(it)
    model.save(0, 2)
    g_path = os.path.join(model.opt['path']['models'], 'net_g_2.pth')
    assert set(torch.load(g_path, map_location='cpu')) == {'params', 'params_ema'}
    loaded = build(tmp_path, options(scored_folder, wrapped('nafnet'), name='sc_load', val=val, ema_decay=0.5,
                                     path={'pretrain_network_g': g_path}))
    test_data = dict(data, score=torch.tensor([LOW, LOW]))  # val.target_score wins over the batch's score
    outputs = []
    for current in (model, loaded):
        current.feed_data(test_data)
        current.test()
        outputs.append(current.output)
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(outputs[0], model.net_g_ema(data['lq'], HIGH).detach())
    assert not torch.equal(outputs[0], model.net_g_ema(data['lq'], LOW).detach())  # the knob has moved by now
    # Validation on GT-only scored data (named after gt_path), conditioned on val.target_score.
    dataset = dict(model.opt['datasets']['train'], name='scored_val', phase='val', blur_kernel_size=5,
                   blur_sigma=[0.2, 1.0], downsample_range=[1, 2])
    loader = torch.utils.data.DataLoader(build_dataset(dataset), batch_size=1)
    loaded.validation(loader, 2, None, False)
    assert 0 < loaded.metric_results['psnr'] < 100


def test_a_bare_restorer_checkpoint_loads_into_the_wrapper(tmp_path, scored_folder):
    from basicsr.archs import build_network

    from gtplus_models.checkpoints import CheckpointError
    from gtplus_models.options import OptionsError
    torch.manual_seed(3)
    bare = build_network(dict(TINY_NAF)).eval()
    weights = str(tmp_path / 'nafnet.pth')
    torch.save({'params': bare.state_dict()}, weights)
    model = build(tmp_path, options(scored_folder, wrapped('nafnet'), name='sc_pre', ema_decay=0.5,
                                    path={'pretrain_restorer': weights}))
    for net in (model.net_g, model.net_g_ema):  # the EMA copy starts from the pretrained restorer too
        for key, value in bare.state_dict().items():
            assert torch.equal(net.restorer.state_dict()[key], value), key
    lq = knob_batch('nafnet')[0]['lq']
    with torch.no_grad():
        assert torch.equal(model.net_g(lq, HIGH), bare(lq))
    other = str(tmp_path / 'msrresnet.pth')
    torch.save({'params': build_network(dict(TINY_MSRRESNET)).state_dict()}, other)
    with pytest.raises(CheckpointError, match='pretrain_restorer'):
        build(tmp_path, options(scored_folder, wrapped('nafnet'), name='sc_other',
                                path={'pretrain_restorer': other}))
    with pytest.raises(OptionsError, match='give one'):
        build(tmp_path, options(scored_folder, wrapped('nafnet'), name='sc_both',
                                path={'pretrain_restorer': weights, 'pretrain_network_g': weights}))
    with pytest.raises(OptionsError, match='target_score'):
        build(tmp_path, options(scored_folder, wrapped('nafnet'), name='sc_target', val={'target_score': 1.5}))
    with pytest.raises(FileNotFoundError, match='path.pretrain_restorer'):
        build(tmp_path, options(scored_folder, wrapped('nafnet'), name='sc_missing',
                                path={'pretrain_restorer': str(tmp_path / 'nowhere.pth')}))
    # A plain state dict (the official NAFNet layout) loads too.
    torch.save(bare.state_dict(), weights)
    plain = build(tmp_path, options(scored_folder, wrapped('nafnet'), name='sc_plain',
                                    path={'pretrain_restorer': weights}))
    assert torch.equal(plain.net_g.restorer.intro.weight, bare.intro.weight)
    # Resuming: basicsr points pretrain_network_g at the saved wrapper; the restorer key (here another network's
    # weights, which would not load) is then ignored.
    model.save(0, 1)
    resumed = build(tmp_path, options(
        scored_folder, wrapped('nafnet'), name='sc_resumed',
        path={'pretrain_restorer': other, 'resume_state': os.path.join(model.opt['path']['training_states'], '1.state'),
              'pretrain_network_g': os.path.join(model.opt['path']['models'], 'net_g_1.pth')}))
    assert torch.equal(resumed.net_g.restorer.intro.weight, bare.intro.weight)


@pytest.mark.parametrize('scale, multiple', [(1, 4), (2, 2), (4, 1)])
def test_tiling_sees_a_wrapped_rrdbnets_pixel_unshuffle(scale, multiple):
    from gtplus_models.tools.tiling import size_rule
    restorer = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': scale, 'num_feat': 8, 'num_block': 1,
                'num_grow_ch': 4}
    assert size_rule(ScoreConditionedRestorer(restorer, 'conv_body', channels=8))[0] == multiple
