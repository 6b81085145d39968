"""The CFMG objective and the quality reward against hand-computed values."""
import pytest
import torch

from gtplus_models.quality import create_quality_metric
from gtplus_models.quality_loss import GTPlusQualityReward, parse_metric_entries, quality_fidelity_loss
from test_quality import photo_tensor


@pytest.mark.parametrize('cond, expected', [(0.0, 2.0), (0.5, 0.75 * 2.0 - 0.25 * 3.0), (1.0, -3.0)])
def test_quality_fidelity_loss_is_one_minus_c_squared_fidelity_minus_c_squared_reward(cond, expected):
    loss = quality_fidelity_loss(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(cond))
    assert loss.item() == pytest.approx(expected)


def test_reward_signs_lower_is_better_metrics_and_weights_each_metric():
    img = torch.cat([photo_tensor('coffee', 96), photo_tensor('chelsea', 96)])
    ref = (img + 0.05 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    reward_fn = GTPlusQualityReward([{'name': 'niqe', 'weight': 0.1}, {'name': 'psnr', 'weight': 0.5}])
    img = img.requires_grad_(True)
    reward, raw = reward_fn(img, ref)
    niqe = create_quality_metric('niqe', as_loss=True)(img).mean()
    psnr = create_quality_metric('psnr', as_loss=True)(img, ref).mean()
    # NIQE is lower-is-better, so it enters negatively; PSNR (higher is better) positively.
    assert reward.item() == pytest.approx(-0.1 * niqe.item() + 0.5 * psnr.item(), rel=1e-5)
    assert raw['niqe'].item() == pytest.approx(niqe.item(), rel=1e-5)
    assert raw['psnr'].item() == pytest.approx(psnr.item(), rel=1e-5)
    (grad_reward, ) = torch.autograd.grad(reward, img)
    (grad_expected, ) = torch.autograd.grad(-0.1 * niqe + 0.5 * psnr, img)
    assert torch.allclose(grad_reward, grad_expected, rtol=1e-4, atol=1e-7)
    assert not any(p.requires_grad for p in reward_fn.parameters())  # the judges stay frozen


def test_metric_entries_from_yaml_forms():
    assert parse_metric_entries('niqe') == [{'name': 'niqe', 'weight': 1.0, 'weights_path': None, 'kwargs': {}}]
    entry = parse_metric_entries([{'name': 'musiq', 'weight': 0.001, 'weights_path': 'w.pth', 'test_y': 1}])[0]
    assert entry == {'name': 'musiq', 'weight': 0.001, 'weights_path': 'w.pth', 'kwargs': {'test_y': 1}}
    with pytest.raises(ValueError, match='non-empty list'):
        parse_metric_entries([])
    with pytest.raises(ValueError, match='has no name'):
        parse_metric_entries([{'weight': 1}])
