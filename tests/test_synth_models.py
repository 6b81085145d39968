"""Undertrained reconstruction (issue 11): UndertrainedReconstructionSynthesizer, ReconstructionModel (snapshots at
chosen epochs), SynthesizedSRModel (pairs made online, seeded per iteration), and the tiny end-to-end chain."""
import json

import pytest
import torch

import gtplus_models  # noqa: F401  (registers every gtplus component)
from gtplus_arch import BicubicSynthesizer, RealESRGANSynthesizer, UndertrainedReconstructionSynthesizer, VQVAE2
from gtplus_arch.synthesizer_arch import build_synthesizer

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY_VQVAE2 = {'type': 'VQVAE2', 'channel': 8, 'n_res_block': 1, 'n_res_channel': 4, 'embed_dim': 4, 'n_embed': 8}


def hr_batch(batch=2, size=32, seed=0):
    """Smooth random RGB images in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode='bicubic', align_corners=False).clamp(0, 1)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def undertrained(**kwargs):
    torch.manual_seed(0)
    return UndertrainedReconstructionSynthesizer(**{'reconstruction': TINY_VQVAE2, **kwargs})


# ------------------------------------------------------------------------------------------------------------ #
# UndertrainedReconstructionSynthesizer
# ------------------------------------------------------------------------------------------------------------ #


def test_undertrained_is_reconstruction_of_the_bicubic_lr():
    synth = undertrained()
    hr = hr_batch()
    out = synth(hr, seeded(1))
    assert out.shape == (2, 3, 8, 8) and out.dtype == hr.dtype
    assert 0 <= out.min() and out.max() <= 1 and torch.equal(out, (out * 255).round() / 255)
    assert torch.equal(out, synth(hr, seeded(2))) and torch.equal(out, synth(hr))  # bicubic + eval VQ-VAE: no draws
    with torch.no_grad():
        expected = synth.reconstruction(BicubicSynthesizer(4)(hr))[0]
    assert torch.equal(out, synth.finish(expected, hr.dtype))
    assert synth(hr.double()).dtype == torch.float64
    assert synth.weights_module() is synth.reconstruction and isinstance(synth.reconstruction, VQVAE2)


def test_undertrained_first_stage_composes_and_draws_from_the_generator():
    stage = {'type': 'RealESRGANSynthesizer', 'preset': 'stablesr'}
    synth = undertrained(first_stage=stage)
    assert isinstance(synth.first_stage, RealESRGANSynthesizer) and synth.first_stage.scale == 4
    hr = hr_batch(size=synth.min_size() + 4 - synth.min_size() % 4)
    out = synth(hr, seeded(3))
    assert torch.equal(out, synth(hr, seeded(3))) and not torch.equal(out, synth(hr, seeded(4)))
    with torch.no_grad():
        expected = synth.reconstruction(RealESRGANSynthesizer(4, 'stablesr')(hr, seeded(3)))[0]
    assert torch.equal(out, synth.finish(expected, hr.dtype))
    with pytest.raises(ValueError, match='first_stage .*scale 2, but scale is 4'):
        undertrained(first_stage={'type': 'BicubicSynthesizer', 'scale': 2})
    with pytest.raises(ValueError, match='reconstruction is BicubicSynthesizer, a synthesizer'):
        UndertrainedReconstructionSynthesizer(reconstruction={'type': 'BicubicSynthesizer'})
    with pytest.raises(ValueError, match="reconstruction needs a 'type'"):
        UndertrainedReconstructionSynthesizer(reconstruction={'channel': 8})


def test_undertrained_never_learns_and_its_provenance_rebuilds_it():
    synth = undertrained().train()
    assert synth.training and not synth.reconstruction.training  # EMA codebooks stay frozen
    before = {k: v.clone() for k, v in synth.state_dict().items()}
    synth(hr_batch())
    assert all(torch.equal(before[k], v) for k, v in synth.state_dict().items())
    record = json.loads(json.dumps(synth.provenance()))
    assert record['reconstruction'] == TINY_VQVAE2
    assert record['first_stage'] == BicubicSynthesizer(4).provenance()
    rebuilt = build_synthesizer(record)
    rebuilt.weights_module().load_state_dict(synth.weights_module().state_dict())
    hr = hr_batch(seed=5)
    assert rebuilt.provenance() == record and torch.equal(rebuilt(hr), synth(hr))
