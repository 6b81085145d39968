"""The quickstart's camera-like "real" LR (gtplus_data.degradations.camera_lr) against hand-computed values."""
import numpy as np
import pytest

from gtplus_data.degradations import CAMERA_LR, camera_lr, defocus_blur, linear_to_srgb, srgb_to_linear

CLEAN = dict(defocus_radius=0, shot_noise=0, read_noise=0, wb_gains=(1, 1, 1), jpeg_quality=None)


def test_srgb_curve_round_trips_and_matches_the_standard_at_known_points():
    # IEC 61966-2-1: 0.5 sRGB is 0.21404 linear; 0.04045 is the knee (0.0031308 linear)
    assert srgb_to_linear(np.float32([0.5]))[0] == pytest.approx(0.214041, abs=1e-6)
    assert srgb_to_linear(np.float32([0.04045]))[0] == pytest.approx(0.0031308, abs=1e-6)
    values = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(values)), values, atol=1e-6)


def test_clean_chain_averages_in_linear_light():
    """Black and white 2x2 blocks, x2 with no blur/noise/JPEG: each LR pixel is half the light, 0.5 linear =
    0.7354 sRGB (averaging the sRGB values would give 0.5)."""
    img = np.zeros((8, 8, 3), np.float32)
    img[::2, ::2] = img[1::2, 1::2] = 1.  # a pixel checkerboard: every 2x2 cell holds two white pixels
    low = camera_lr(img, 2, seed=0, **CLEAN)
    assert low.shape == (4, 4, 3) and low.dtype == np.float32
    np.testing.assert_allclose(low, 1.055 * 0.5 ** (1 / 2.4) - 0.055, atol=2e-4)


def test_white_balance_gains_act_in_linear_light():
    grey = np.full((16, 16, 3), 0.5, np.float32)
    low = camera_lr(grey, 1, seed=0, **dict(CLEAN, wb_gains=(1.06, 1.0, 0.94)))
    expected = [linear_to_srgb(srgb_to_linear(np.float32([0.5])) * g)[0] for g in (1.06, 1.0, 0.94)]
    np.testing.assert_allclose(low.reshape(-1, 3).mean(0), expected, atol=2e-4)
    np.testing.assert_allclose(low.reshape(-1, 3).std(0), 0, atol=1e-5)  # a constant stays constant through demosaic


def test_shot_noise_grows_with_the_square_root_of_the_linear_signal():
    """Variance shot_noise * x in linear light: between linear levels x_lo and x_hi the std ratio is
    sqrt(x_hi / x_lo) (the demosaic filters both levels alike)."""
    params = dict(CLEAN, shot_noise=0.003)
    stds = {}
    for level in (0.2, 0.8):
        flat = np.full((256, 256, 3), level, np.float32)
        stds[level] = srgb_to_linear(camera_lr(flat, 1, seed=3, **params)).std()
    x_lo, x_hi = srgb_to_linear(np.float32([0.2, 0.8]))
    assert stds[0.8] / stds[0.2] == pytest.approx(np.sqrt(x_hi / x_lo), rel=0.1)


def test_seeded_and_shaped():
    rng = np.random.RandomState(0)
    img = rng.rand(64, 48, 3).astype(np.float32)
    a, b, c = camera_lr(img, 4, seed=1), camera_lr(img, 4, seed=1), camera_lr(img, 4, seed=2)
    assert a.shape == (16, 12, 3) and 0 <= a.min() and a.max() <= 1
    assert a.tobytes() == b.tobytes() and not np.array_equal(a, c)
    assert CAMERA_LR['jpeg_quality'] == 80  # the documented default (README, quickstart report settings)


def test_defocus_disk_keeps_the_light_and_spreads_it_over_the_disk():
    impulse = np.zeros((21, 21, 1), np.float32)
    impulse[10, 10] = 1.
    spread = defocus_blur(impulse, 3.0)
    assert spread.sum() == pytest.approx(1.0, abs=1e-5)
    support = np.argwhere(spread > 1e-6) - 10
    assert np.hypot(*support.T).max() <= 3.0 + np.sqrt(2) / 2  # only pixels touching the disk
    assert np.count_nonzero(spread > 1e-6) == pytest.approx(np.pi * 9, rel=0.35)
    np.testing.assert_array_equal(defocus_blur(impulse, 0), impulse)


@pytest.mark.parametrize('kwargs, message', [
    (dict(scale=3), 'scale must be an integer >= 1 dividing the image size 16x16'),
    (dict(scale=8), r'the LR size 2x2 must be even|LR size'),
    (dict(scale=4, blur=1), 'unknown parameter.*blur'),
])
def test_bad_arguments_name_the_problem(kwargs, message):
    img = np.zeros((16, 16, 3), np.float32)
    scale = kwargs.pop('scale')
    if scale == 8:
        img = np.zeros((24, 24, 3), np.float32)  # 3x3 LR: odd, no RGGB cells
        message = 'the LR size 3x3 must be even'
    with pytest.raises(ValueError, match=message):
        camera_lr(img, scale, 0, **kwargs)
