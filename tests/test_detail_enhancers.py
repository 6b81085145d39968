"""Training-free detail enhancers (GTPlusDetailEnhancer), GT-size variants, and enhancer training pairs.

The thresholds below are measured values with a margin: on a 128² astronaut crop blurred with σ = 1.5 and stored in
8 bits (26.6 dB), Wiener (nsr 1e-3) gives +6.0 dB, Wiener (default nsr 0.01) +4.3 dB, Richardson-Lucy (10
iterations) +3.0 dB; default USM multiplies the energy above 0.25 cycles/pixel by 2.5.
"""
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import run_cli
from gtplus_arch.detail_enhancer_arch import DETAIL_MODES, GTPlusDetailEnhancer, gaussian_otf
from gtplus_data.degradations import gaussian_blur, resize, sr_degrade


def psnr(a, b):
    return 10 * np.log10(1 / np.mean((np.asarray(a, np.float64) - b)**2))


def to_tensor(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()


def to_image(tensor):
    return tensor[0].numpy().transpose(1, 2, 0)


def photo(size=128, top=100, left=150, name='astronaut'):
    from gtplus_data.sample_photos import load_sample_photo
    return load_sample_photo(name)[top:top + size, left:left + size].astype(np.float32) / 255.


def blurred_photo(sigma=1.5):
    """(sharp, blurred and 8-bit quantised) astronaut crops, HxWx3 float32."""
    sharp = photo()
    return sharp, np.round(gaussian_blur(sharp, sigma) * 255) / 255


def high_frequency_energy(x, cutoff=0.25):
    """Spectral energy of [B,C,H,W] above ``cutoff`` cycles per pixel."""
    spectrum = torch.fft.fft2(x.double() - x.double().mean(dim=(-2, -1), keepdim=True)).abs()**2
    fy, fx = torch.fft.fftfreq(x.shape[-2]), torch.fft.fftfreq(x.shape[-1])
    radius = torch.sqrt(fy[:, None]**2 + fx[None, :]**2)
    return spectrum[..., radius > cutoff].sum().item()


@pytest.mark.parametrize('mode', DETAIL_MODES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_shapes_ranges_and_batching(mode, dtype):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 17, 23, dtype=dtype)
    net = GTPlusDetailEnhancer(mode=mode, sigma=1.2, iterations=3)
    out = net(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    # Batched: each image is enhanced on its own.
    for i in range(3):
        assert torch.allclose(net(x[i:i + 1]), out[i:i + 1], atol=1e-5)
    # The filters keep DC: a flat image stays flat.
    flat = torch.full((1, 3, 9, 11), 0.4, dtype=dtype)
    assert torch.allclose(net(flat), flat, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU here')
@pytest.mark.parametrize('mode', DETAIL_MODES)
def test_gpu_matches_cpu(mode):
    x = torch.rand(2, 3, 40, 33)
    net = GTPlusDetailEnhancer(mode=mode)
    assert torch.allclose(net(x.to('cuda')).cpu(), net(x), atol=1e-4)
    assert net(x.to('cuda', torch.float16)).dtype == torch.float16


def test_registered_parameter_free_and_checked():
    from basicsr.archs import build_network
    net = build_network({'type': 'GTPlusDetailEnhancer', 'mode': 'wiener', 'sigma': 1.5, 'nsr': 0.005})
    assert isinstance(net, GTPlusDetailEnhancer) and not net.state_dict()
    assert 'sigma=1.5' in repr(net)
    for bad in ({'mode': 'sharpen'}, {'sigma': 0}, {'nsr': -1}, {'iterations': 0}, {'radii': []},
                {'radii': [1, 2], 'amount': [1, 2, 3]}):
        with pytest.raises(ValueError):
            GTPlusDetailEnhancer(**bad)


def test_otf_matches_the_project_blur():
    """The Gaussian OTF on the symmetric extension reproduces degradations.gaussian_blur (cv2, BORDER_REFLECT)."""
    sharp = photo(size=40)
    x = to_tensor(sharp)
    from gtplus_arch.detail_enhancer_arch import symmetric_extension
    ext = symmetric_extension(x)
    blurred = torch.fft.irfft2(torch.fft.rfft2(ext) * gaussian_otf(80, 80, 1.5), s=(80, 80))[..., :40, :40]
    assert np.abs(to_image(blurred) - gaussian_blur(sharp, 1.5)).max() < 1e-5


@pytest.mark.parametrize('opts, min_gain', [({'mode': 'wiener', 'nsr': 1e-3}, 5.0), ({'mode': 'wiener'}, 3.5),
                                            ({'mode': 'richardson_lucy', 'iterations': 10}, 2.5),
                                            ({'mode': 'richardson_lucy', 'iterations': 20}, 3.2)])
def test_deconvolution_partly_undoes_a_known_blur(opts, min_gain):
    sharp, blurred = blurred_photo(1.5)
    restored = to_image(GTPlusDetailEnhancer(sigma=1.5, **opts)(to_tensor(blurred)))
    gain = psnr(restored, sharp) - psnr(blurred, sharp)
    assert gain > min_gain, f'{opts}: {gain:.2f} dB'


def test_wiener_borders_do_not_ring():
    """The symmetric extension keeps the border as good as the inside; a plain circular FFT wrecks it."""
    sharp, blurred = blurred_photo(1.5)
    border = np.zeros(sharp.shape[:2], bool)
    border[:6], border[-6:], border[:, :6], border[:, -6:] = True, True, True, True
    restored = to_image(GTPlusDetailEnhancer('wiener', sigma=1.5, nsr=1e-3)(to_tensor(blurred)))
    otf = gaussian_otf(128, 128, 1.5)
    circular = torch.fft.irfft2(torch.fft.rfft2(to_tensor(blurred)) * otf / (otf**2 + 1e-3), s=(128, 128))
    circular = to_image(circular.clamp(0, 1))
    assert psnr(restored[border], sharp[border]) > psnr(blurred[border], sharp[border]) + 4  # measured +5.7 dB
    assert psnr(circular[border], sharp[border]) < psnr(blurred[border], sharp[border]) - 10  # measured -14 dB


def test_usm_raises_high_frequency_energy():
    x = to_tensor(photo())
    out = GTPlusDetailEnhancer('usm')(x)
    factor = high_frequency_energy(out) / high_frequency_energy(x)
    assert 2.2 < factor < 2.9, factor  # measured 2.54
    assert abs(out.mean().item() - x.mean().item()) < 4e-3  # detail added, brightness kept (clipping: 1/255)
    stronger = GTPlusDetailEnhancer('usm', amount=1.0)(x)
    assert high_frequency_energy(stronger) > 1.5 * high_frequency_energy(out)


# --- super-resolve-gt with detail enhancers and at GT size -------------------------------------------------------


def write_lmdb(path, images):
    from gtplus_data.lmdb_writer import write_images
    write_images(str(path), sorted(images.items()))
    return str(path)


@pytest.fixture(scope='module')
def gt_lmdb(tmp_path_factory):
    """Three 48x40 photo crops, blurred with σ = 1.3 (an imperfect GT), as an LMDB."""
    root = tmp_path_factory.mktemp('detail_gt')
    crops = {f'img{i}': gaussian_blur(photo(size=48, top=60 + 40 * i, left=120 + 30 * i)[:, :40], 1.3)
             for i in range(3)}
    return write_lmdb(root / 'gt.lmdb', crops)


def test_at_gt_size_gives_the_enhancer_the_gt(tmp_path, gt_lmdb):
    from gtplus_data.image_source import ImageSource
    from gtplus_models.tools.super_resolve import super_resolve_gt
    seen = []

    def recording_sr(img):  # an x2 "SR model": returns twice the input size
        seen.append(tuple(img.shape[-2:]))
        return torch.nn.functional.interpolate(img, scale_factor=2, mode='nearest')

    written = super_resolve_gt(gt_lmdb, str(tmp_path), [2], recording_sr, at_gt_size=True, preview=0)
    assert seen == [(48, 40)] * 3  # the GT itself, no bicubic upsampling
    variant = ImageSource(written[0])
    assert written[0].endswith('sr_x2.lmdb') and variant.read('img0').shape == (48, 40, 3)
    # An x2 nearest-neighbour upsampling, area-averaged back, is the GT again (up to 8-bit rounding).
    assert np.abs(variant.read('img1') - ImageSource(gt_lmdb).read('img1')).max() <= 1 / 255 + 1e-6
    seen.clear()
    super_resolve_gt(gt_lmdb, str(tmp_path / 'up'), [3], recording_sr, preview=0)
    assert seen == [(144, 120)] * 3  # without the flag: the 3x bicubic upsampling
    with pytest.raises(ValueError, match='one --scales value'):
        super_resolve_gt(gt_lmdb, str(tmp_path / 'x'), [2, 3], recording_sr, at_gt_size=True)


def test_detail_sweep_names_and_errors():
    from gtplus_models.tools.super_resolve import detail_options, detail_variants
    assert detail_options('usm') == ('detail_usm', {'mode': 'usm'})
    assert detail_options('wiener:1.0') == ('detail_wiener_s1.0', {'mode': 'wiener', 'sigma': 1.0})
    assert detail_options('rl:1.5')[0] == 'detail_rl_s1.5'
    assert detail_options('rl')[0] == 'detail_rl_s1.0'
    assert detail_options('usm:2')[0] == 'detail_usm_r2.0'
    assert detail_options({'mode': 'wiener', 'nsr': 0.003, 'name': 'soft'}) == ('soft', {'mode': 'wiener',
                                                                                         'nsr': 0.003})
    for bad, message in ((['sharpen'], 'mode must be one of'), (['wiener:x'], 'SIGMA must be a number'),
                         (['wiener', 'wiener:1.0'], 'distinct names'), ([{'mode': 'usm', 'gain': 2}], 'gain')):
        with pytest.raises(ValueError, match=message):
            detail_variants(bad)


def test_super_resolve_gt_with_a_weightless_detail_enhancer(tmp_path, gt_lmdb):
    """A GTPlusDetailEnhancer YAML needs no weights; a network with parameters and no weights is a clear error."""
    from gtplus_data.image_source import ImageSource
    opt = tmp_path / 'wiener.yml'
    opt.write_text(yaml.safe_dump({'type': 'GTPlusDetailEnhancer', 'mode': 'wiener', 'sigma': 1.3}))
    proc = run_cli(['super-resolve-gt', gt_lmdb, tmp_path / 'out', '--enhancer-opt', opt, '--scales', '1',
                    '--variant-name', 'detail_wiener', '--colour-align', 'wavelet'], cwd=tmp_path)
    variant, gt = ImageSource(str(tmp_path / 'out' / 'detail_wiener.lmdb')), ImageSource(gt_lmdb)
    assert variant.keys == gt.keys and variant.read('img2').shape == gt.read('img2').shape
    assert (tmp_path / 'out' / 'preview_detail_wiener.png').exists()
    assert 'super-resolve-gt: 3 images x 1 variants -> ' in proc.stderr
    # Deblurring the σ = 1.3 GT adds detail: the variant is measurably different from it.
    assert 25 < psnr(variant.read('img0'), gt.read('img0')) < 45
    nafnet = tmp_path / 'nafnet.yml'
    nafnet.write_text(yaml.safe_dump({'type': 'GTPlusNAFNet', 'width': 4, 'middle_blk_num': 1,
                                      'enc_blk_nums': [1], 'dec_blk_nums': [1]}))
    proc = run_cli(['super-resolve-gt', gt_lmdb, tmp_path / 'n', '--enhancer-opt', nafnet], cwd=tmp_path,
                   check=False)
    assert proc.returncode == 2 and '--enhancer-weights is required' in proc.stderr
    assert 'Traceback' not in proc.stderr and not (tmp_path / 'n').exists()


def test_detail_sweep_cli_feeds_enhance_gt(tmp_path, gt_lmdb):
    from basicsr.archs import build_network

    from gtplus_data.image_source import ImageSource
    out = tmp_path / 'sources'
    proc = run_cli(['super-resolve-gt', gt_lmdb, out, '--detail-sweep', 'usm', 'wiener:1.0', 'rl:1.5'], cwd=tmp_path)
    names = ['detail_usm', 'detail_wiener_s1.0', 'detail_rl_s1.5']
    assert all((out / f'{n}.lmdb' / 'meta_info.txt').exists() for n in names)
    assert (out / 'preview_detail.png').exists() and not (out / 'preview.png').exists()
    assert 'super-resolve-gt: 3 images x 3 variants -> ' in proc.stderr
    preview = cv2.imread(str(out / 'preview_detail.png'))
    assert preview.shape[1] == 4 * round(40 * 192 / 48) + 3 * 4  # GT and three detail sources side by side
    proc = run_cli(['super-resolve-gt', gt_lmdb, out, '--detail-sweep', 'usm', '--scales', '2'], cwd=tmp_path,
                   check=False)
    assert proc.returncode == 2 and '--detail-sweep runs each detail enhancer on the GT itself' in proc.stderr
    # The detail sources are ordinary variants: enhance-gt mixes them with the GT.
    cfmg = {'type': 'CFMG', 'num_sources': 4, 'width': 4, 'num_levels': 2, 'hidden': 8}
    torch.save({'params': build_network(dict(cfmg)).state_dict()}, tmp_path / 'cfmg.pth')
    (tmp_path / 'cfmg.yml').write_text(yaml.safe_dump(cfmg))
    proc = run_cli(['enhance-gt', gt_lmdb, tmp_path / 'enh.lmdb', '--variants', *[out / f'{n}.lmdb' for n in names],
                    '--cfmg-opt', tmp_path / 'cfmg.yml', '--cfmg-weights', tmp_path / 'cfmg.pth'], cwd=tmp_path)
    assert ImageSource(str(tmp_path / 'enh.lmdb')).keys == ImageSource(gt_lmdb).keys
    assert 'enhance-gt: 3 images at c=0.3 -> ' in proc.stderr


# --- make-enhancer-pairs ---------------------------------------------------------------------------------------


def test_enhancer_pair_is_the_classical_degradation():
    from gtplus_models.tools.enhancer_pairs import enhancer_pair
    img = photo(size=36)
    plain = enhancer_pair(img, 3, np.random.RandomState(0))
    assert np.array_equal(plain, resize(resize(img, 12, 12), 36, 36))  # the quickstart's bicubic down-up
    assert np.array_equal(enhancer_pair(img, 1, np.random.RandomState(0)), img)
    degraded = enhancer_pair(img, 2, np.random.RandomState(5), blur=(1, 1), noise=(5, 5), jpeg=(80, 80))
    rng = np.random.RandomState(5)
    assert (rng.uniform(1, 1), rng.uniform(5, 5), rng.randint(80, 81)) == (1, 5, 80)  # drawn before the noise
    expected = sr_degrade(img, 2, 1.0, 5.0, 80, rng)
    assert np.array_equal(degraded, expected) and degraded.shape == img.shape


@pytest.mark.parametrize('ranges, message', [({'blur': (1.5, 0.5)}, '--blur must be LOW,HIGH'),
                                             ({'noise': (-1, 2)}, '--noise must be'),
                                             ({'jpeg': (0, 101)}, '--jpeg must be'),
                                             ({'blur': (1, 2, 3)}, '--blur must be LOW,HIGH')])
def test_enhancer_pair_range_errors(ranges, message):
    from gtplus_models.tools.enhancer_pairs import enhancer_pair
    with pytest.raises(ValueError, match=message):
        enhancer_pair(photo(size=16), 2, np.random.RandomState(0), **ranges)


def test_make_enhancer_pairs_cli_is_deterministic_per_key(tmp_path, gt_lmdb):
    from gtplus_data.image_source import ImageSource
    from gtplus_models.tools.enhancer_pairs import write_enhancer_pairs

    def lmdb_items(path):
        source = ImageSource(str(path))
        return {key: source.read_bytes(key) for key in source.keys}

    flags = ['--scales', '1,2,3', '--blur', '0.5,1.5', '--noise', '0,5', '--jpeg', '70,95', '--seed', '3']
    proc = run_cli(['make-enhancer-pairs', gt_lmdb, tmp_path / 'one', *flags], cwd=tmp_path)
    lq, gt = ImageSource(str(tmp_path / 'one_lq.lmdb')), ImageSource(str(tmp_path / 'one_gt.lmdb'))
    assert lq.keys == gt.keys == sorted(f'img{i}_x{s}' for i in range(3) for s in (1, 2, 3))
    assert lq.read('img1_x3').shape == gt.read('img1_x3').shape == (48, 40, 3)
    assert np.array_equal(gt.read('img1_x2'), ImageSource(gt_lmdb).read('img1'))
    assert 25 < psnr(lq.read('img0_x2'), gt.read('img0_x2')) < 40
    assert (tmp_path / 'one_preview.png').exists()
    assert 'make-enhancer-pairs: 9 pairs (3 scales) -> ' in proc.stderr
    for rank in (0, 1):
        run_cli(['make-enhancer-pairs', gt_lmdb, tmp_path / 'sharded', *flags, '--rank', rank, '--world-size', 2],
                cwd=tmp_path)
    assert not (tmp_path / 'sharded_preview.png').exists()  # no figure before the merge
    run_cli(['make-enhancer-pairs', gt_lmdb, tmp_path / 'sharded', *flags, '--merge'], cwd=tmp_path)
    run_cli(['make-enhancer-pairs', gt_lmdb, tmp_path / 'again', *flags], cwd=tmp_path)
    for side in ('lq', 'gt'):
        one = lmdb_items(tmp_path / f'one_{side}.lmdb')
        assert one == lmdb_items(tmp_path / f'sharded_{side}.lmdb') == lmdb_items(tmp_path / f'again_{side}.lmdb')
        assert open(tmp_path / f'one_{side}.lmdb' / 'meta_info.txt').read() == \
            open(tmp_path / f'sharded_{side}.lmdb' / 'meta_info.txt').read()
    assert (tmp_path / 'sharded_preview.png').exists()
    write_enhancer_pairs(gt_lmdb, str(tmp_path / 'seed4'), [1, 2, 3], blur=(0.5, 1.5), noise=(0, 5), jpeg=(70, 95),
                         seed=4, preview=0)
    other, one = lmdb_items(tmp_path / 'seed4_lq.lmdb'), lmdb_items(tmp_path / 'one_lq.lmdb')
    assert other.keys() == one.keys() and other != one  # the seed matters


@pytest.mark.parametrize('flags, message', [(['--blur', '1.5,0.5'], '--blur must be LOW,HIGH'),
                                            (['--jpeg', '50,101'], '--jpeg must be'),
                                            (['--noise', 'a,b'], '--noise must be numbers'),
                                            (['--scales', '0'], '--scales must be positive integers')])
def test_make_enhancer_pairs_cli_errors(tmp_path, gt_lmdb, flags, message):
    proc = run_cli(['make-enhancer-pairs', gt_lmdb, tmp_path / 'bad', *flags], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr
    assert not os.path.exists(tmp_path / 'bad_lq.lmdb')
