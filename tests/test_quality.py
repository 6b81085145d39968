"""The quality adapter: offline NIQE/PIQE, gradients, input checks, missing weights, ensemble normalisation."""
import time

import numpy as np
import pytest
import torch

from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
from gtplus_models.quality import (MissingWeightsError, QualityEnsemble, create_quality_metric, niqe_params_path,
                                   normalise_scores)

CROP = 256


def photo_tensor(name, size=CROP):
    """Centre crop of a sample photo as Tensor[1,3,size,size] RGB in [0,1]."""
    img = load_sample_photo(name)
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    crop = img[top:top + size, left:left + size].astype(np.float32) / 255.
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]


@pytest.fixture(scope='module')
def photos():
    return torch.cat([photo_tensor(n) for n in sample_photo_names()])


@pytest.fixture(scope='module')
def niqe():
    return create_quality_metric('niqe')


def gaussian_blur(batch, sigma):
    import cv2
    imgs = [cv2.GaussianBlur(img.permute(1, 2, 0).numpy(), (0, 0), sigma) for img in batch]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def test_niqe_rates_blurred_copy_worse_for_every_photo(photos, niqe):
    assert niqe.lower_better and niqe.name == 'niqe'
    sharp, blurred = niqe(photos), niqe(gaussian_blur(photos, 2))
    assert sharp.shape == (len(sample_photo_names()), )
    assert torch.isfinite(sharp).all()
    assert (blurred > sharp).all(), dict(zip(sample_photo_names(), zip(sharp.tolist(), blurred.tolist())))


def test_niqe_params_are_basicsrs_and_window_matches():
    import os.path as osp

    import basicsr.metrics
    import scipy.io
    from pyiqa.matlab_utils import fspecial
    ours = scipy.io.loadmat(niqe_params_path())
    basic = np.load(osp.join(osp.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))
    np.testing.assert_array_equal(ours['mu_prisparam'], basic['mu_pris_param'])
    np.testing.assert_array_equal(ours['cov_prisparam'], basic['cov_pris_param'])
    # basicsr's gaussian_window is not converted because pyiqa builds the same window itself
    np.testing.assert_allclose(fspecial(7, 7 / 6, 1).numpy().squeeze(), basic['gaussian_window'], atol=1e-8)


def test_niqe_close_to_basicsr_implementation(photos, niqe):
    from basicsr.metrics import calculate_niqe
    img = photos[1]  # chelsea
    bgr255 = (img.permute(1, 2, 0).numpy()[..., ::-1] * 255).round()
    ref = calculate_niqe(bgr255, 0, input_order='HWC', convert_to='y')
    # pyiqa uses YIQ luminance (MATLAB rgb2gray), basicsr YCbCr Y: same parameters, slightly different input
    assert abs(float(niqe(img[None])[0]) - ref) < 0.05 * ref


def test_niqe_as_loss_gives_finite_nonzero_gradients(photos):
    metric = create_quality_metric('niqe', as_loss=True)
    img = photos[:2].clone().requires_grad_(True)
    score = metric(img)
    assert score.shape == (2, ) and score.requires_grad
    score.sum().backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_piqe_as_loss_is_refused_because_its_gradient_is_zero(photos):
    with pytest.raises(ValueError, match='gradient is zero'):
        create_quality_metric('piqe', as_loss=True)
    assert create_quality_metric('piqe')(photos[:2]).shape == (2, )


def test_inference_mode_keeps_no_graph(photos, niqe):
    assert not niqe(photos[:1].clone().requires_grad_(True)).requires_grad


@pytest.mark.parametrize('bad, message', [
    (lambda x: x * 2 - 1, 'must be in [0,1]'),
    (lambda x: x[0], 'Tensor[B,3,H,W]'),
    (lambda x: x[:, :1], 'Tensor[B,3,H,W]'),
    (lambda x: (x * 255).to(torch.uint8), 'float Tensor'),
    (lambda x: x[..., :95, :], 'needs at least 96x96'),  # pyiqa itself dies on an empty block tensor
])
def test_input_checks(photos, niqe, bad, message):
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
        niqe(bad(photos[:1]))


@pytest.fixture
def empty_pyiqa_cache(tmp_path, monkeypatch):
    from pyiqa.utils import download_util
    monkeypatch.setattr(download_util, 'DEFAULT_CACHE_DIR', str(tmp_path / 'pyiqa_cache'))
    return str(tmp_path / 'pyiqa_cache')


@pytest.mark.parametrize('name, file_name', [('musiq', 'musiq_koniq_ckpt-e95806b9.pth'),
                                             ('topiq_nr', 'cfanet_nr_koniq_res50-9a73138b.pth')])
def test_missing_weights_fail_fast_naming_file_and_folder(empty_pyiqa_cache, name, file_name):
    start = time.time()
    with pytest.raises(MissingWeightsError) as info:
        create_quality_metric(name)
    assert time.time() - start < 10
    assert file_name in str(info.value) and empty_pyiqa_cache in str(info.value)
    assert f"'{name}'" in str(info.value) and 'weights_path' in str(info.value)


def test_missing_weights_path_is_named(tmp_path):
    with pytest.raises(MissingWeightsError, match='nope.pth'):
        create_quality_metric('musiq', weights_path=str(tmp_path / 'nope.pth'))


def test_weights_path_loads_a_saved_checkpoint_and_refuses_pickled_code(tmp_path, photos):
    import argparse

    from pyiqa.archs.cnniqa_arch import CNNIQA
    torch.manual_seed(0)
    net = CNNIQA(pretrained=None)
    path = str(tmp_path / 'cnniqa.pth')
    torch.save({'params': net.state_dict()}, path)
    metric = create_quality_metric('cnniqa', weights_path=path)
    loaded = metric.iqa.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    assert metric(photos[:2]).shape == (2, )
    torch.save({'params': net.state_dict(), 'extra': argparse.Namespace(a=1)}, path)
    with pytest.raises(ValueError, match='not a plain tensor checkpoint'):
        create_quality_metric('cnniqa', weights_path=path)


def test_unknown_metric_lists_choices():
    with pytest.raises(KeyError, match='niqe'):
        create_quality_metric('no_such_metric')


def test_normalise_scores_hand_computed():
    raw = {'niqe': [2., 4., 6.], 'musiq': [10., 30., 20.], 'flat': [1., 1., 1.]}
    lower = {'niqe': True, 'musiq': False, 'flat': True}
    ens, parts = normalise_scores(raw, lower)
    np.testing.assert_allclose(parts['niqe'], [1., .5, 0.])  # min-max [0,.5,1], flipped
    np.testing.assert_allclose(parts['musiq'], [0., 1., .5])
    np.testing.assert_allclose(parts['flat'], [.5, .5, .5])  # no spread: no ranking
    np.testing.assert_allclose(ens, [(1 + 0 + .5) / 3, (.5 + 1 + .5) / 3, (0 + .5 + .5) / 3])
    ens2, _ = normalise_scores({'niqe': [2., 4., 6.], 'musiq': [10., 30., 20.]}, lower)
    np.testing.assert_allclose(ens2, [.5, .75, .25])


def test_normalise_scores_with_fixed_bounds_clips():
    ens, _ = normalise_scores({'niqe': [0., 5., 20.]}, {'niqe': True}, bounds={'niqe': (2., 10.)})
    np.testing.assert_allclose(ens, [1., .625, 0.])


def test_quality_ensemble_matches_normalise_scores(photos):
    ensemble = QualityEnsemble(['niqe', 'piqe'])
    with pytest.raises(RuntimeError, match='fit'):
        ensemble(photos[:1])
    batch = photos[:4]
    raw = {n: s.numpy() for n, s in ensemble.raw_scores(batch).items()}
    expected, _ = normalise_scores(raw, ensemble.lower_better)
    got = ensemble.fit(raw)(batch)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1
