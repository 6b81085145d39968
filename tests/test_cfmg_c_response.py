"""The CFMG's masks follow c once trained (issue 9): a tiny CFMG trained a few dozen iterations with the quickstart's
settings (per-sample c, logit_norm, a balanced NIQE reward) mixes differently at c = 0 and c = 1, and the model warns
when the masks stop depending on c."""
import logging

import numpy as np
import pytest
import torch


def tiny_batch(size=96, seed=0):
    """GT = two blurred photo crops; sources = GT + an unsharp-masked copy (the detail NIQE prefers)."""
    from gtplus_arch.detail_enhancer_arch import GTPlusDetailEnhancer
    from gtplus_data.degradations import gaussian_blur
    from gtplus_data.image_util import image_to_tensor
    from gtplus_data.sample_photos import load_sample_photo
    crops = []
    for name, (top, left) in (('astronaut', (60, 200)), ('coffee', (100, 150))):
        img = load_sample_photo(name)[top:top + size, left:left + size].astype(np.float32) / 255.
        crops.append(image_to_tensor(gaussian_blur(img, 1.3)))
    gt = torch.cat(crops)
    sharp = GTPlusDetailEnhancer(mode='usm', radii=[1.0, 2.0], amount=1.5)(gt)
    return {'gt': gt, 'variants': sharp.unsqueeze(1)}


def build_cfmg_model(tmp_path, network_extra=None, train_extra=None, iters=40):
    from basicsr.models import build_model
    network = {'type': 'CFMG', 'num_sources': 2, 'width': 8, 'num_levels': 2, 'hidden': 16, 'dropout': 0.0}
    network.update(network_extra or {})
    train = {'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 1e-2}, 'scheduler': {'type': 'MultiStepLR',
             'milestones': [10**6], 'gamma': 0.5}, 'total_iter': iters, 'warmup_iter': -1, 'grad_clip': 1.0,
             'fidelity_opt': {'type': 'MSELoss', 'loss_weight': 4.0},
             'quality_opt': {'metrics': [{'name': 'niqe', 'weight': 1e-3}]}}
    train.update(train_extra or {})
    opt = {'name': 'c_response', 'model_type': 'CFMGModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'network_g': network, 'logger': {'print_freq': 10},
           'path': {'models': str(tmp_path), 'training_states': str(tmp_path), 'strict_load_g': True}, 'train': train}
    return build_model(opt)


@torch.no_grad()
def mask_gap_and_distances(model, batch):
    from gtplus_models.enhanced_supervision import enhance
    net = model.net_g.eval()
    gt, sources = batch['gt'], torch.cat([batch['gt'].unsqueeze(1), batch['variants']], 1)
    out0, masks0 = enhance(net, gt, sources, 0.0)
    out1, masks1 = enhance(net, gt, sources, 1.0)
    return ((masks0 - masks1).abs().max().item(), (out0 - gt).pow(2).mean().item(), (out1 - gt).pow(2).mean().item())


def test_trained_cfmg_masks_depend_on_c(tmp_path):
    torch.manual_seed(0)
    batch = tiny_batch()
    model = build_cfmg_model(tmp_path, {'logit_norm': 3}, {'cond_per_sample': True})
    for it in range(1, 41):
        model.feed_data(batch)
        model.optimize_parameters(it)
    gap, mse0, mse1 = mask_gap_and_distances(model, batch)
    assert model.log_dict['mask_c_gap'] == pytest.approx(gap, abs=1e-6)  # the logged gap is the measured one
    assert abs(model.log_dict['logit_max']) <= 3 * 16 and abs(model.log_dict['logit_min']) <= 3 * 16  # normalised
    assert gap > 0.05, gap  # c = 0 and c = 1 mix differently
    assert mse0 < mse1, (mse0, mse1)  # c = 0 stays closer to the GT; c = 1 takes more of the detail source


def test_masks_independent_of_c_give_a_warning(tmp_path, caplog):
    torch.manual_seed(0)
    model = build_cfmg_model(tmp_path, train_extra={'optim_g': {'type': 'AdamW', 'lr': 0.0}}, iters=1)
    with torch.no_grad():  # cut c's only path into the released network: its input channel
        model.net_g.intro.weight[:, 6] = 0
    model.feed_data(tiny_batch())
    logger = logging.getLogger('basicsr')
    logger.addHandler(caplog.handler)
    try:
        model.optimize_parameters(10)  # 10 = print_freq: the check runs
    finally:
        logger.removeHandler(caplog.handler)
    assert model.log_dict['mask_c_gap'] < 1e-6
    assert 'the masks no longer depend on c' in caplog.text


def test_logit_norm_and_cond_head_keep_official_checkpoints_loading():
    from gtplus_arch import CFMG
    official = CFMG(num_sources=2, width=8, num_levels=2, hidden=16)
    state = official.state_dict()
    CFMG(num_sources=2, width=8, num_levels=2, hidden=16, logit_norm=3, logit_bound=5).load_state_dict(state)
    with_head = CFMG(num_sources=2, width=8, num_levels=2, hidden=16, cond_head=True)
    missing = with_head.load_state_dict(state, strict=False).missing_keys
    assert missing == ['cond_embed.weight', 'cond_embed.bias']
    gt = torch.rand(1, 3, 32, 32)
    # Zero-initialised, the new head path starts from the released behaviour.
    assert torch.allclose(with_head.eval().logits(gt, 0.7), official.eval().logits(gt, 0.7), atol=1e-6)
    normed = CFMG(num_sources=2, width=8, num_levels=2, hidden=16, logit_norm=3).eval()
    normed.load_state_dict(state)
    logits = normed.logits(gt, 0.5)
    assert logits.mean().abs() < 1e-5 and logits.std().item() == pytest.approx(3, rel=1e-4)
    with pytest.raises(ValueError, match='logit_bound'):
        CFMG(logit_bound=0)
