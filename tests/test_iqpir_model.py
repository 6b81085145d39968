"""IQPIRModel (IQPIR stage II): the feature and cross-entropy losses against hand computation, frozen codebooks and
generator, the quality loss from quality_start_iter on (judged in [0,1]), the stage-I weight copy, val.target_score,
and stage I -> stage II -> resume through gtplus's train entry."""
import os

import pytest
import test_dual_codebook_vq_model as stage_one_tests
import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from test_dual_codebook_vq_model import TINY_AE, batch, build, vq_options
from torch import nn

import gtplus_models  # noqa: F401  (registers every gtplus component)
from gtplus_arch.iqpir_arch import DualCodebookVQAutoEncoder
from gtplus_models.options import OptionsError

pytestmark = pytest.mark.usefixtures('one_torch_thread')

scored_folder = stage_one_tests.scored_folder  # the module fixture: three scored 32x32 GT PNGs
TINY_IQPIR = dict(TINY_AE, type='IQPIRNet', dim_embd=16, n_head=2, n_layers=1)
JUDGE = 'IQPIRTestBrightnessReward'


if JUDGE not in LOSS_REGISTRY:  # a second import of this module must not register it twice

    @LOSS_REGISTRY.register()
    class IQPIRTestBrightnessReward(nn.Module):
        """A stand-in judge (pyiqa's NIQE needs 96x96 images): reward = mean brightness, as GTPlusQualityReward
        returns ``(reward, raw scores)``."""

        def __init__(self, weight=1.0):
            super().__init__()
            self.weight = weight

        def forward(self, img):
            brightness = img.mean()
            return self.weight * brightness, {'brightness': brightness.detach()}


@pytest.fixture(scope='module')
def stage1(tmp_path_factory):
    """A stage-I checkpoint of TINY_AE whose params_ema differ from its params (so the key read is visible)."""
    torch.manual_seed(1)
    params = DualCodebookVQAutoEncoder(**{k: v for k, v in TINY_AE.items() if k != 'type'}).state_dict()
    ema = {key: value + 0.01 for key, value in params.items()}
    path = str(tmp_path_factory.mktemp('stage1') / 'net_g_stage1.pth')
    torch.save({'params': params, 'params_ema': ema}, path)
    return path, params, ema


def iqpir_options(data_root, vqgan_path, name='iqpir', quality=True, path=None, val=None, **train):
    """A complete stage-II option dict (most tests feed their own batches)."""
    dataset = {'name': 'scored_blind', 'type': 'GTPlusScoredBlindDataset', 'dataroot_gt': data_root,
               'io_backend': {'type': 'disk'}, 'score_name': 'musiq', 'gt_size': 32, 'use_hflip': False,
               'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1}
    opt = {
        'name': name, 'model_type': 'IQPIRModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': dataset},
        'network_g': dict(TINY_IQPIR), 'network_vqgan': dict(TINY_AE),
        'path': dict({'pretrain_network_g': None, 'pretrain_network_vqgan': vqgan_path, 'strict_load_g': True,
                      'resume_state': None}, **(path or {})),
        'train': dict({'optim_g': {'type': 'Adam', 'lr': 1e-2, 'betas': [0.9, 0.99]}, 'total_iter': 10,
                       'warmup_iter': -1, 'ema_decay': 0.9}, **train),
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 10, 'use_tb_logger': False},
    }
    if quality:
        opt['train'].setdefault('quality_opt', {'type': JUDGE, 'weight': 1.0})
    if val is not None:
        opt['val'] = val
    return opt


def degraded(seed=0, scores=(0.9, 0.3)):
    """A fixed batch: smooth GT in [0,1] and a noisier LQ of it, [2,3,32,32], with scores."""
    data = batch(list(scores), seed)
    noise = torch.randn(data['gt'].shape, generator=torch.Generator().manual_seed(seed + 1))
    data['lq'] = (data['gt'] + 0.1 * noise).clamp(0, 1)
    return data


def bare(model):
    return model.get_bare_model(model.net_g)


def snapshot(module):
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def test_losses_match_a_hand_computation(tmp_path, scored_folder, stage1):
    model = build(tmp_path, iqpir_options(scored_folder, stage1[0], quality_start_iter=100))
    data = degraded()
    model.feed_data(data)
    vqgan, net = model.net_vqgan, bare(model)
    gt, lq, score = data['gt'], data['lq'], data['score']
    with torch.no_grad():
        # Nearest codes by brute force, independently of the quantizers: the encoder latent as [B*h*w, C] rows.
        z = vqgan.encode(gt)
        rows = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        nearest = [torch.cdist(rows, book.embedding.weight).argmin(1) for book in (vqgan.quantize,
                                                                                  vqgan.quantize_aesthetic)]
        idx_common, idx_hq, _ = vqgan.code_indices(gt)
        assert torch.equal(idx_common.flatten(), nearest[0]) and torch.equal(idx_hq.flatten(), nearest[1])
        fused = vqgan.quantize.embedding.weight[nearest[0]] + 0.8 * vqgan.quantize_aesthetic.embedding.weight[nearest[1]]
        target = fused.reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        logits_common, logits_hq, lq_feat = net(lq, score, code_only=True)
    n = logits_common.shape[-1]
    expected = {
        'l_feat': ((target - lq_feat)**2).mean(),
        'l_ce_common': F.cross_entropy(logits_common.reshape(-1, n), idx_common.flatten()) * 0.5,
        'l_ce_hq': F.cross_entropy(logits_hq.reshape(-1, n), idx_hq.flatten()) * 0.5,
    }
    model.optimize_parameters(1)
    assert set(model.log_dict) == set(expected)
    for key, value in expected.items():
        assert model.log_dict[key] == pytest.approx(value.item(), rel=1e-5), key
    # The weights are options: feat 0 drops l_feat, and the CE scales linearly.
    model = build(tmp_path, iqpir_options(scored_folder, stage1[0], quality_start_iter=100, feat_loss_weight=0,
                                          entropy_loss_weight=2.0))
    model.feed_data(data)
    model.optimize_parameters(1)
    assert 'l_feat' not in model.log_dict
    assert model.log_dict['l_ce_hq'] == pytest.approx(4 * expected['l_ce_hq'].item(), rel=1e-5)


def test_only_the_encoder_and_transformer_learn(tmp_path, scored_folder, stage1):
    model = build(tmp_path, iqpir_options(scored_folder, stage1[0], quality_start_iter=1))
    before, vqgan_before = snapshot(bare(model)), snapshot(model.net_vqgan)
    model.feed_data(degraded())
    for it in range(1, 4):
        model.optimize_parameters(it)
    assert 'l_quality' in model.log_dict
    after = bare(model).state_dict()
    frozen = [key for key in before if key.split('.')[0] in ('quantize', 'quantize_aesthetic', 'generator')]
    assert len(frozen) > 10
    for key in frozen:
        assert torch.equal(after[key], before[key]), key
    for prefix in ('encoder.', 'score_embed.', 'feat_emb.', 'ft_layers.', 'idx_pred_layer.'):
        moved = [key for key in before if key.startswith(prefix) and not torch.equal(after[key], before[key])]
        assert moved, prefix
    for key, value in model.net_vqgan.state_dict().items():
        assert torch.equal(value, vqgan_before[key]), key
    assert not any(p.requires_grad for p in model.net_vqgan.parameters()) and not model.net_vqgan.training
    optimized = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert optimized == {id(p) for p in bare(model).parameters() if p.requires_grad}


def test_quality_loss_starts_at_quality_start_iter_and_judges_in_range(tmp_path, scored_folder, stage1):
    model = build(tmp_path, iqpir_options(scored_folder, stage1[0], quality_start_iter=3, quality_loss_weight=0.3))
    net = bare(model)
    with torch.no_grad():
        net.generator.blocks[-1].weight.mul_(50)  # a decoder whose raw output leaves [0,1] by far
    decoded, judged = [], []
    decode, judge_forward = net.decode, model.quality_judge.forward

    def recording_decode(quant):
        out = decode(quant)
        decoded.append((out.min().item(), out.max().item()))
        return out

    def recording_judge(img):
        judged.append((img.min().item(), img.max().item()))
        result = judge_forward(img)
        judged[-1] += (result[0].item(), )
        return result

    net.decode = recording_decode
    model.quality_judge.forward = recording_judge
    model.feed_data(degraded())
    for it in (1, 2):
        model.optimize_parameters(it)
        assert 'l_quality' not in model.log_dict and 'brightness' not in model.log_dict
    assert not decoded and not judged  # no decode is paid before the quality loss starts
    model.optimize_parameters(3)
    assert len(decoded) == len(judged) == 1
    assert decoded[0][0] < 0 and decoded[0][1] > 1
    low, high, reward = judged[0]
    assert 0 <= low and high <= 1
    assert model.log_dict['l_quality'] == pytest.approx(-0.3 * reward, rel=1e-5)
    assert model.log_dict['brightness'] == pytest.approx(reward, rel=1e-5)


def test_stage_one_weights_are_copied_without_pretrain_network_g(tmp_path, scored_folder, stage1):
    path, params, ema = stage1
    model = build(tmp_path, iqpir_options(scored_folder, path))
    for net in (bare(model), model.net_g_ema, model.net_vqgan):
        own = net.state_dict()
        shared = [key for key in ema if key in own]
        assert len(shared) == len(ema)  # every stage-I tensor: encoder, both codebooks, generator
        for key in shared:
            assert torch.equal(own[key], ema[key]), key  # params_ema, the default param_key_vqgan
    model = build(tmp_path, iqpir_options(scored_folder, path, path={'param_key_vqgan': 'params'}))
    assert torch.equal(bare(model).quantize.embedding.weight, params['quantize.embedding.weight'])
    # With pretrain_network_g, net_g is that checkpoint, not stage I.
    model.save(0, 1)
    saved = os.path.join(model.opt['path']['models'], 'net_g_1.pth')
    with torch.no_grad():
        before = bare(model).encoder.blocks[0].weight.clone()
    loaded = build(tmp_path, iqpir_options(scored_folder, path, name='from_g', path={'pretrain_network_g': saved}))
    assert torch.equal(bare(loaded).encoder.blocks[0].weight, before)
    assert not torch.equal(before, ema['encoder.blocks.0.weight'])


@pytest.mark.parametrize('drop', ['path.pretrain_network_vqgan', 'network_vqgan'])
def test_a_missing_stage_one_is_a_one_line_error(tmp_path, scored_folder, stage1, drop):
    opt = iqpir_options(scored_folder, stage1[0])
    if drop == 'network_vqgan':
        del opt['network_vqgan']
    else:
        opt['path']['pretrain_network_vqgan'] = None
    with pytest.raises(OptionsError) as info:
        build(tmp_path, opt)
    assert drop in str(info.value) and '\n' not in str(info.value)
    opt = iqpir_options(scored_folder, str(tmp_path / 'no_such.pth'))
    with pytest.raises(OptionsError) as info:  # parse_options checks every path.pretrain_network_* file
        build(tmp_path, opt)
    assert 'path.pretrain_network_vqgan' in str(info.value) and 'no_such.pth' in str(info.value)


def test_a_stage_one_of_other_sizes_is_refused(tmp_path, scored_folder, stage1):
    opt = iqpir_options(scored_folder, stage1[0])
    opt['network_g']['codebook_size'] = 16
    with pytest.raises(OptionsError, match='differ in size'):
        build(tmp_path, opt)


def test_a_judge_that_cannot_score_the_network_size_is_refused_at_build(tmp_path, scored_folder, stage1):
    """NIQE needs 96x96 images: a 32x32 network is refused when built, not at quality_start_iter."""
    quality = {'type': 'GTPlusQualityReward', 'metrics': [{'name': 'niqe', 'weight': 1.0}]}
    opt = iqpir_options(scored_folder, stage1[0], quality_opt=quality, quality_start_iter=1000)
    with pytest.raises(OptionsError) as info:
        build(tmp_path, opt)
    assert 'train.quality_opt' in str(info.value) and '96x96' in str(info.value) and '\n' not in str(info.value)


@pytest.mark.parametrize('value', [1.5, -0.1, 'high', True])
def test_a_bad_target_score_is_a_one_line_error(tmp_path, scored_folder, stage1, value):
    opt = iqpir_options(scored_folder, stage1[0], val={'val_freq': 10, 'save_img': False, 'target_score': value})
    with pytest.raises(OptionsError) as info:
        build(tmp_path, opt)
    assert 'val.target_score' in str(info.value) and '\n' not in str(info.value)


def test_test_restores_at_the_target_score(tmp_path, scored_folder, stage1):
    val = {'val_freq': 10, 'save_img': False, 'target_score': 0.95}
    model = build(tmp_path, iqpir_options(scored_folder, stage1[0], val=val))
    with torch.no_grad():
        model.net_g_ema.score_embed.weight.normal_()  # so that the score matters
    data = degraded()
    model.feed_data(data)
    model.test()
    with torch.no_grad():
        expected = model.net_g_ema(data['lq'], 0.95)[0]
        own_score = model.net_g_ema(data['lq'], data['score'])[0]
    assert torch.equal(model.output, expected) and not torch.equal(expected, own_score)
    model.target_score = None  # unset: the batch's score, else 1.0
    model.test()
    assert torch.equal(model.output, own_score)
    model.feed_data({'lq': data['lq']})
    model.test()
    with torch.no_grad():
        assert torch.equal(model.output, model.net_g_ema(data['lq'], 1.0)[0])


def test_training_without_scores_is_a_one_line_error(tmp_path, scored_folder, stage1):
    model = build(tmp_path, iqpir_options(scored_folder, stage1[0]))
    model.feed_data({'lq': degraded()['lq'], 'gt': degraded()['gt']})
    with pytest.raises(ValueError, match='score') as info:
        model.optimize_parameters(1)
    assert '\n' not in str(info.value)


def test_stage_one_then_stage_two_then_resume_through_the_train_entry(tmp_path, scored_folder):
    """Stage I saves, stage II starts from it with one key, and --auto_resume continues at the saved iteration to
    the weights of the uninterrupted run."""
    from test_synth_models import run
    stage1_opt = vq_options(scored_folder, name='iqpir_s1', gan=False, total_iter=2)
    stage1_opt['datasets']['train']['dataset_enlarge_ratio'] = 4  # 12 samples: 6 iterations per epoch
    stage1_opt['logger']['save_checkpoint_freq'] = 2
    run(str(tmp_path / 'stage1'), stage1_opt)
    stage1_weights = str(tmp_path / 'stage1' / 'experiments' / 'iqpir_s1' / 'models' / 'net_g_2.pth')
    stage1_params = torch.load(stage1_weights, weights_only=True)['params']

    def stage2(total_iter):
        val = {'val_freq': 4, 'save_img': False, 'target_score': 0.9,
               'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
        opt = iqpir_options(scored_folder, stage1_weights, name='iqpir_s2', total_iter=total_iter,
                            quality_start_iter=3, val=val)
        opt['datasets']['train']['dataset_enlarge_ratio'] = 4
        opt['datasets']['val'] = dict(opt['datasets']['train'], name='scored_val', dataset_enlarge_ratio=1)
        opt['logger']['save_checkpoint_freq'] = 2
        return opt

    def models(run_dir):
        return os.path.join(str(run_dir), 'experiments', 'iqpir_s2', 'models')

    def weights(run_dir, label):
        return torch.load(os.path.join(models(run_dir), f'net_g_{label}.pth'), weights_only=True)

    uninterrupted = tmp_path / 'uninterrupted'
    messages = run(str(uninterrupted), stage2(6))
    text = '\n'.join(messages)
    assert '126 tensors copied' in text and '[params]' in text  # stage I saved no EMA: its params
    assert 'l_ce_hq: ' in text and 'l_quality: ' in text and 'brightness: ' in text and '# psnr: ' in text
    # Only net_g is saved (the frozen stage I is the user's file).
    assert sorted(os.listdir(models(uninterrupted))) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_6.pth',
                                                         'net_g_latest.pth']

    cut = tmp_path / 'resumed'
    run(str(cut), stage2(4))
    messages = run(str(cut), stage2(6), resume=True)
    text = '\n'.join(messages)
    assert any('Resuming training from epoch' in m and 'iter: 4' in m for m in messages)
    assert 'tensors copied' not in text and os.path.join(models(cut), 'net_g_4.pth') in text
    first = next(m for m in messages if 'iter:' in m and 'l_feat' in m)
    assert 'iter:       5' in first
    final = weights(cut, 6)
    for key in ('params', 'params_ema'):
        expected = weights(uninterrupted, 6)[key]
        assert final[key].keys() == expected.keys()
        for name, value in final[key].items():
            assert torch.equal(value, expected[name]), (key, name)
    # The frozen parts are still stage I's; the trained ones moved on from iteration 4.
    for name, value in stage1_params.items():
        if name.split('.')[0] in ('quantize', 'quantize_aesthetic', 'generator'):
            assert torch.equal(final['params'][name], value), name
    at_4 = weights(cut, 4)['params']
    assert not torch.equal(final['params']['ft_layers.0.linear1.weight'], at_4['ft_layers.0.linear1.weight'])


@pytest.mark.parametrize('name', ['train_IQPIR_stage2_FFHQ512.yml', 'train_IQPIR_stage2_general.yml'])
def test_shipped_stage_two_options_build_and_train_at_tiny_size(tmp_path, scored_folder, stage1, name):
    """The shipped files' train and val keys are the ones IQPIRModel reads (networks and data shrunk)."""
    import json

    from test_shipped_options import load_shipped
    opt = json.loads(json.dumps(load_shipped(name)))  # plain dicts (the loader keeps order in OrderedDicts)
    assert opt['model_type'] == 'IQPIRModel' and opt['train']['quality_opt']['type'] == 'GTPlusQualityReward'
    assert opt['train']['optim_g']['lr'] == pytest.approx(1e-4) and opt['train']['ema_decay'] == 0.995
    sizes = {k: v for k, v in opt['network_vqgan'].items() if k != 'type'}
    assert sizes == {k: v for k, v in opt['network_g'].items() if k in sizes}  # stage I's sizes
    assert opt['train']['quality_opt']['metrics'] == [{'name': 'niqe', 'weight': 1.0}]
    opt.update(num_gpu=0, network_g=dict(TINY_IQPIR), network_vqgan=dict(TINY_AE))
    opt['train']['quality_opt'] = {'type': JUDGE}  # NIQE cannot score 32x32 images (see the test above)
    del opt['datasets']['val']
    opt['datasets']['train'].update(dataroot_gt=scored_folder, io_backend={'type': 'disk'}, score_name='musiq',
                                    gt_size=32, num_worker_per_gpu=0)
    opt['path']['pretrain_network_vqgan'] = stage1[0]
    model = build(tmp_path, opt)
    assert model.quality_start_iter == 100000 and model.quality_loss_weight == 0.2 and model.target_score == 0.9
    assert model.feat_loss_weight == 1.0 and model.entropy_loss_weight == 0.5
    model.feed_data(degraded())
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_feat', 'l_ce_common', 'l_ce_hq'}
