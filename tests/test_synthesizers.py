"""Degradation synthesizers: the contract (shape, range, dtype, device, seeds), BicubicSynthesizer against basicsr's
MATLAB imresize, and RealESRGANSynthesizer against basicsr's own RealESRGANModel.feed_data and kernel formulas."""
import json
import math
import random

import numpy as np
import pytest
import torch
import yaml

import gtplus_arch  # noqa: F401  (registers the synthesizers)
from gtplus_arch import (REALESRGAN_PRESETS, BicubicSynthesizer, DegradationPlan, RealESRGANSynthesizer,
                         UndertrainedReconstructionSynthesizer, build_synthesizer)
from gtplus_arch.synthesizer_arch import KERNEL_TYPES, bivariate_kernels, matlab_bicubic_matrix, sinc_kernels

HR_SIZE = 96  # the smallest multiple of 4 at or above RealESRGANSynthesizer().min_size() (76), with some margin


def hr_batch(batch=3, height=HR_SIZE, width=HR_SIZE, seed=0, dtype=torch.float32):
    """Smooth random RGB images in [0,1] (noise alone would make every degradation look alike)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(1, height // 8), max(1, width // 8), generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode='bicubic', align_corners=False)
    return (fine + 0.05 * torch.rand(batch, 3, height, width, generator=g)).clamp(0, 1).to(dtype)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


SYNTHESIZERS = {
    'bicubic': lambda: BicubicSynthesizer(scale=4),
    'bicubic-torch': lambda: BicubicSynthesizer(scale=4, method='torch'),
    'realesrgan': lambda: RealESRGANSynthesizer(scale=4),
    'stablesr': lambda: RealESRGANSynthesizer(scale=4, preset='stablesr'),
    'undertrained': lambda: UndertrainedReconstructionSynthesizer(
        scale=4, reconstruction={'type': 'VQVAE2', 'channel': 8, 'n_res_block': 1, 'n_res_channel': 4, 'embed_dim': 4,
                                 'n_embed': 8}),
}


@pytest.mark.parametrize('name', list(SYNTHESIZERS))
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_contract_shape_range_dtype_device_and_seeds(name, dtype):
    synth = SYNTHESIZERS[name]()
    hr = hr_batch(dtype=dtype)
    out = synth(hr, seeded(1))
    assert out.shape == (3, 3, HR_SIZE // 4, HR_SIZE // 4)
    assert out.dtype == dtype and out.device == hr.device
    assert 0 <= out.min() and out.max() <= 1
    if synth.round_output:
        assert torch.equal(out, (out * 255).round() / 255)  # 8-bit levels, as a PNG holds them
    assert torch.equal(out, synth(hr, seeded(1)))  # a seed fixes the output, bit for bit
    assert synth(hr).shape == out.shape  # generator=None works
    if isinstance(synth, RealESRGANSynthesizer):
        assert not torch.equal(out, synth(hr, seeded(2)))
        torch.manual_seed(7)
        first = synth(hr)
        torch.manual_seed(7)
        assert torch.equal(first, synth(hr))  # None: torch's global RNG, so basicsr's manual_seed reproduces it
    else:
        assert torch.equal(out, synth(hr))  # bicubic (alone or before an eval-mode VQ-VAE) is deterministic


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_input_with_cpu_or_cuda_generator():
    synth = RealESRGANSynthesizer()
    hr = hr_batch().cuda()
    out = synth(hr, torch.Generator(device='cuda').manual_seed(0))
    assert out.device == hr.device and out.shape == (3, 3, 24, 24)
    assert torch.equal(synth(hr, seeded(3)), synth(hr, seeded(3)))  # draws on the CPU generator, moved over
    # The same CPU draws on either device give the same plan and kernels; the images agree up to float rounding
    # (which can flip a JPEG coefficient's or a pixel's rounding here and there, hence the mean).
    assert synth.draw_plan(seeded(4)) == synth.draw_plan(seeded(4), 'cuda')
    assert (synth(hr, seeded(5)).cpu() - synth(hr.cpu(), seeded(5))).abs().mean() < 0.01
    assert BicubicSynthesizer()(hr).device == hr.device


def test_size_errors_name_the_size_and_scale():
    with pytest.raises(ValueError, match=r'98x96 is not a multiple of scale 4'):
        RealESRGANSynthesizer()(torch.rand(1, 3, 98, 96))
    with pytest.raises(ValueError, match=r'33x32 is not a multiple of scale 2'):
        BicubicSynthesizer(scale=2)(torch.rand(1, 3, 33, 32))
    with pytest.raises(ValueError, match=r'40x40 is too small.*at least 76'):
        RealESRGANSynthesizer()(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r'RGB batch'):
        BicubicSynthesizer()(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match='scale'):
        BicubicSynthesizer(scale=0)


def test_bicubic_matches_basicsr_matlab_imresize():
    from basicsr.utils.matlab_functions import imresize
    for scale, (height, width) in ((4, (40, 56)), (3, (36, 27)), (2, (6, 10))):  # (6, 10): smaller than the kernel
        hr = hr_batch(2, height, width, seed=scale)
        out = BicubicSynthesizer(scale, round_output=False)(hr)
        expected = torch.stack([imresize(image, 1 / scale) for image in hr]).clamp(0, 1)
        assert out.shape == expected.shape
        assert torch.allclose(out, expected, atol=2e-6), (scale, (out - expected).abs().max())
    assert torch.allclose(matlab_bicubic_matrix(64, 4).sum(1), torch.ones(16))


def test_bicubic_torch_method_differs_only_at_the_border():
    hr = hr_batch(2, 64, 64)
    matlab = BicubicSynthesizer(round_output=False)(hr)
    torch_method = BicubicSynthesizer(method='torch', round_output=False)(hr)
    assert torch.allclose(matlab[..., 3:-3, 3:-3], torch_method[..., 3:-3, 3:-3], atol=1e-5)
    with pytest.raises(ValueError, match="'pil'"):
        BicubicSynthesizer(method='pil')


# ------------------------------------- kernels ------------------------------------- #


def test_kernel_formulas_match_basicsr():
    """Each kernel family against basicsr's numpy function, zero-padded to 21 as RealESRGANDataset pads it."""
    from basicsr.data.degradations import (bivariate_Gaussian, bivariate_generalized_Gaussian, bivariate_plateau,
                                           circular_lowpass_kernel)
    cases = [  # (family, size, sigma_x, sigma_y, theta, beta, basicsr kernel)
        (0, 7, 1.3, 1.3, 0., 1., lambda: bivariate_Gaussian(7, 1.3, 1.3, 0, isotropic=True)),
        (0, 15, 2.5, 0.7, 0.9, 1., lambda: bivariate_Gaussian(15, 2.5, 0.7, 0.9, isotropic=False)),
        (1, 21, 1.1, 1.1, 0., 0.6, lambda: bivariate_generalized_Gaussian(21, 1.1, 1.1, 0, 0.6, isotropic=True)),
        (1, 11, 2.0, 0.4, -2.1, 3.2, lambda: bivariate_generalized_Gaussian(11, 2.0, 0.4, -2.1, 3.2, isotropic=False)),
        (2, 13, 0.9, 0.9, 0., 1.7, lambda: bivariate_plateau(13, 0.9, 0.9, 0, 1.7, isotropic=True)),
        (2, 9, 1.8, 0.5, 2.8, 1.2, lambda: bivariate_plateau(9, 1.8, 0.5, 2.8, 1.2, isotropic=False)),
    ]
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    ours = bivariate_kernels(torch.tensor([c[0] for c in cases]), torch.tensor([c[1] for c in cases]),
                             *(as_tensor([c[i] for c in cases]) for i in range(2, 6)), 21)
    for kernel, case in zip(ours, cases):
        pad = (21 - case[1]) // 2
        expected = torch.from_numpy(np.pad(case[-1](), pad))
        assert torch.allclose(kernel, expected, rtol=1e-9, atol=1e-12), case[:6]
    omegas, sizes = [0.7, 2.9, 1.4], [7, 11, 21]
    ours = sinc_kernels(as_tensor(omegas), torch.tensor(sizes), 21)
    for kernel, omega, size in zip(ours, omegas, sizes):
        expected = torch.from_numpy(circular_lowpass_kernel(omega, size, pad_to=21))
        # torch's bessel_j1 is accurate to ~5e-7 (scipy's j1 to double precision): the kernels agree to ~1e-7.
        assert torch.allclose(kernel, expected, rtol=0, atol=2e-7), (omega, size)


def test_drawn_kernels_follow_basicsr_distributions():
    synth = RealESRGANSynthesizer()
    batch = 4000
    kernel1, kernel2, final = synth.draw_kernels(batch, seeded(0))
    assert kernel1.shape == kernel2.shape == final.shape == (batch, 21, 21) and kernel1.dtype == torch.float32
    for kernels in (kernel1, kernel2, final):
        assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(batch), atol=1e-5)
    # Sizes: every odd size 7..21, uniformly (seen on sinc kernels, which are non-zero up to their window's edge;
    # a narrow Gaussian underflows to 0 inside its window).
    sinc_only = RealESRGANSynthesizer(sinc_prob=1).draw_kernels(800, seeded(2))[0]
    support = (sinc_only.abs() > 0).any(dim=1).sum(dim=1)
    counts = torch.bincount(support, minlength=22)[7::2]
    assert counts.sum() == 800 and counts.min() > 60  # 100 expected per size
    pulses = (final[:, 10, 10] == 1).float().mean().item()
    assert abs(pulses - 0.2) < 0.03  # final_sinc_prob 0.8
    # Only isotropic Gaussians without sinc: symmetric, sigma in blur_sigma.
    iso = RealESRGANSynthesizer(kernel_list=['iso'], kernel_prob=[1], sinc_prob=0, blur_sigma=[1.0, 1.0])
    kernels = iso.draw_kernels(8, seeded(1))[0]
    assert torch.allclose(kernels, kernels.transpose(1, 2)) and torch.allclose(kernels, kernels.flip(1))
    assert torch.allclose(kernels[0], kernels[0].flip(0).flip(1))
    profile = kernels[0, 10, 9:12] / kernels[0, 10, 10]
    assert torch.allclose(profile.double(), torch.tensor([math.exp(-0.5), 1, math.exp(-0.5)], dtype=torch.float64),
                          atol=1e-6)


# ----------------------------------- the chain ----------------------------------- #


def test_forward_is_kernels_then_plan_then_degrade():
    synth = RealESRGANSynthesizer()
    hr = hr_batch()
    g = seeded(11)
    kernels = synth.draw_kernels(hr.size(0), g)
    plan = synth.draw_plan(g)
    assert torch.equal(synth(hr, seeded(11)), synth.degrade(hr, *kernels, plan, g))


def basicsr_feed_data(hr, kernels, plan, params, seed, monkeypatch):
    """basicsr's RealESRGANModel.feed_data on CPU, its random/np.random choices scripted from ``plan``.

    The model is made without __init__ (it builds the networks and calls .cuda()); feed_data needs only opt,
    is_train, device, jpeger and usm_sharpener. The training-pair queue (.cuda() inside) is skipped: its first call
    only stores the batch. gt_size is the HR size, so the random crop keeps everything. Under torch 2.x DiffJPEG's
    output is channels-last and basicsr's filter2D after it fails on .view, so the reference JPEG output is made
    contiguous, as RealESRGANSynthesizer does (values unchanged).
    """
    from basicsr.models.realesrgan_model import RealESRGANModel
    from basicsr.utils import DiffJPEG, USMSharp

    draws = plan.basicsr_draws()
    kinds, modes, uniforms = (iter(draws[key]) for key in ('choices', 'choice', 'uniform'))

    def uniform(*bounds):
        value = next(uniforms)
        assert not bounds or bounds[0] <= value <= bounds[1], (bounds, value)  # the plan is one basicsr can draw
        return value

    monkeypatch.setattr(random, 'choices', lambda population, weights: [next(kinds)])
    monkeypatch.setattr(random, 'choice', lambda population: next(modes))
    monkeypatch.setattr(np.random, 'uniform', uniform)
    jpeger = DiffJPEG(differentiable=False)
    model = RealESRGANModel.__new__(RealESRGANModel)
    model.opt = {**params, 'scale': 4, 'gt_size': hr.size(-1)}
    model.is_train, model.device = True, torch.device('cpu')
    model.jpeger = lambda x, quality: jpeger(x, quality=quality).contiguous()
    model.usm_sharpener = USMSharp()
    model._dequeue_and_enqueue = lambda: None
    torch.manual_seed(seed)
    model.feed_data({'gt': hr.clone(), 'kernel1': kernels[0], 'kernel2': kernels[1], 'sinc_kernel': kernels[2]})
    assert next(kinds, None) is None and next(modes, None) is None and next(uniforms, None) is None
    return model.lq


EQUALITY_CASES = {
    # down/area, Gaussian noise, all gray (basicsr's shared gray field); blur2; up/bicubic, Poisson all gray;
    # resize+sinc then JPEG.
    'gray-noise': (dict(gray_noise_prob=1.0, gray_noise_prob2=1.0),
                   DegradationPlan(0.4, 'area', True, True, 1.15, 'bicubic', False, True, 'bilinear')),
    # up/bicubic, Poisson, no blur2; down/area, Gaussian; JPEG then resize+sinc; gray per sample.
    'mixed': (dict(gray_noise_prob=0.5, gray_noise_prob2=0.5),
              DegradationPlan(1.3, 'bicubic', False, False, 0.7, 'area', True, False, 'bicubic')),
    # keep/keep, colour noise only, StableSR ranges (rounded, as basicsr always rounds).
    'stablesr-keep': (dict(preset='stablesr', round_output=True, gray_noise_prob=0.0, gray_noise_prob2=0.0),
                      DegradationPlan(1, 'bilinear', True, True, 1, 'area', True, False, 'area')),
}


@pytest.mark.parametrize('case', list(EQUALITY_CASES))
def test_degrade_equals_basicsr_feed_data(case, monkeypatch):
    """RealESRGANSynthesizer.degrade == basicsr's RealESRGANModel.feed_data, bit for bit.

    Shared draws: the three kernels (drawn once by the synthesizer, given to both), the per-batch choices (the plan;
    basicsr's random.choices/random.choice/np.random.uniform calls are scripted to return them) and the torch draws
    (noise sigmas, gray flags, noise fields, Poisson samples, JPEG qualities): basicsr makes them from the global
    torch RNG, the synthesizer from a generator seeded alike, in the same order.
    """
    options, plan = EQUALITY_CASES[case]
    synth = RealESRGANSynthesizer(**options)
    hr = hr_batch(seed=3)
    kernels = synth.draw_kernels(hr.size(0), seeded(5))
    expected = basicsr_feed_data(hr, kernels, plan, synth.params, seed=17, monkeypatch=monkeypatch)
    out = synth.degrade(hr, *kernels, plan, seeded(17))
    assert out.shape == expected.shape == (3, 3, 24, 24)
    assert torch.equal(out, expected), (out - expected).abs().max()
    torch.manual_seed(17)
    assert torch.equal(synth.degrade(hr, *kernels, plan), expected)  # None: the global RNG, as basicsr


def test_draw_plan_covers_basicsr_choices():
    synth = RealESRGANSynthesizer()
    plans = [synth.draw_plan(seeded(i)) for i in range(400)]
    assert {p.mode1 for p in plans} == set(('area', 'bilinear', 'bicubic'))
    up = np.mean([p.scale1 > 1 for p in plans])
    keep = np.mean([p.scale1 == 1 for p in plans])
    assert abs(up - 0.2) < 0.06 and abs(keep - 0.1) < 0.05  # resize_prob [0.2, 0.7, 0.1]
    assert all(0.15 <= p.scale1 <= 1.5 and 0.3 <= p.scale2 <= 1.2 for p in plans)
    assert abs(np.mean([p.blur2 for p in plans]) - 0.8) < 0.06
    assert abs(np.mean([p.resize_first for p in plans]) - 0.5) < 0.08


# ---------------------------------- options ---------------------------------- #


def test_presets_land_in_the_module_and_keys_override():
    realesrgan = RealESRGANSynthesizer()
    assert realesrgan.params['noise_range'] == [1, 30] and realesrgan.params['jpeg_range2'] == [30, 95]
    assert realesrgan.params['blur_sigma2'] == [0.2, 1.5] and realesrgan.params['final_sinc_prob'] == 0.8
    assert realesrgan.round_output and realesrgan.params['use_usm']
    stablesr = RealESRGANSynthesizer(preset='stablesr')
    expected = {'resize_range': [0.3, 1.5], 'noise_range': [1, 15], 'jpeg_range': [60, 95], 'second_blur_prob': 0.5,
                'resize_range2': [0.6, 1.2], 'noise_range2': [1, 12], 'jpeg_range2': [60, 100]}
    assert {key: stablesr.params[key] for key in expected} == expected  # METHODS.md section 4
    assert not stablesr.round_output
    assert set(REALESRGAN_PRESETS) == {'realesrgan', 'stablesr'}
    custom = RealESRGANSynthesizer(preset='stablesr', noise_range=[2, 3], kernel_list=['iso'], kernel_prob=[1])
    assert custom.params['noise_range'] == [2, 3] and custom.params['jpeg_range'] == [60, 95]


def test_unknown_or_bad_options_are_named():
    with pytest.raises(ValueError, match=r"preset 'real-esrgan'.*realesrgan, stablesr"):
        RealESRGANSynthesizer(preset='real-esrgan')
    with pytest.raises(ValueError, match=r"no parameter 'noise_rnge'.*did you mean noise_range"):
        RealESRGANSynthesizer(noise_rnge=[1, 2])
    with pytest.raises(ValueError, match='resize_prob2 needs 3 weights'):
        RealESRGANSynthesizer(resize_prob2=[0.5, 0.5])
    with pytest.raises(ValueError, match='jpeg_range'):
        RealESRGANSynthesizer(jpeg_range=[0, 50])
    with pytest.raises(ValueError, match='resize_range.*1 <= high'):
        RealESRGANSynthesizer(resize_range=[0.5, 0.9])
    with pytest.raises(ValueError, match='kernel_list2'):
        RealESRGANSynthesizer(kernel_list2=['iso', 'box'])
    with pytest.raises(ValueError, match='kernel_prob needs one weight per kernel_list'):
        RealESRGANSynthesizer(kernel_list=['iso', 'aniso'])
    with pytest.raises(ValueError, match='blur_kernel_size must be an odd integer'):
        RealESRGANSynthesizer(blur_kernel_size=20)
    with pytest.raises(ValueError, match='gray_noise_prob must be a probability'):
        RealESRGANSynthesizer(gray_noise_prob=1.5)
    assert len(KERNEL_TYPES) == 6


def test_provenance_is_json_and_rebuilds_the_synthesizer():
    for synth in (RealESRGANSynthesizer(preset='stablesr', noise_range=[2, 9]), BicubicSynthesizer(3, 'torch')):
        record = json.loads(json.dumps(synth.provenance()))
        rebuilt = build_synthesizer(record)
        assert type(rebuilt) is type(synth) and rebuilt.provenance() == record
        hr = hr_batch(height=96, width=96)
        assert torch.equal(rebuilt(hr, seeded(2)), synth(hr, seeded(2)))
    assert RealESRGANSynthesizer().provenance()['type'] == 'RealESRGANSynthesizer'
    assert list(RealESRGANSynthesizer().state_dict()) == []  # DiffJPEG's tables stay out of checkpoints


def test_build_synthesizer_from_a_yaml_block():
    import basicsr  # noqa: F401  (basicsr first, as a user's script would)
    from basicsr.utils.registry import ARCH_REGISTRY
    assert 'RealESRGANSynthesizer' in ARCH_REGISTRY and 'BicubicSynthesizer' in ARCH_REGISTRY
    opt = yaml.safe_load("""
first_stage:
  type: RealESRGANSynthesizer
  preset: stablesr
  scale: 2
  second_blur_prob: 0.0
""")
    synth = build_synthesizer(opt['first_stage'])
    assert isinstance(synth, RealESRGANSynthesizer) and synth.scale == 2 and synth.params['second_blur_prob'] == 0
    assert build_synthesizer(synth) is synth
    with pytest.raises(ValueError, match="'type'"):
        build_synthesizer({'scale': 4})
    with pytest.raises(ValueError, match="'ORNet'.*not a Synthesizer"):
        build_synthesizer({'type': 'ORNet'})
    with pytest.raises(KeyError, match='BicubicSynthesiser'):
        build_synthesizer({'type': 'BicubicSynthesiser'})
