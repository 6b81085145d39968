"""The LQ-DDPM (issue 12): LQDiffusionUNet built from diffusers config keys or loaded from a local diffusers folder,
the scheduler builder, the low-timestep sampler, and DiffusionRefinedSynthesizer (first stage + SDEdit), all with
a tiny UNet on the CPU."""
import json
import os

import pytest
import torch

import gtplus_arch  # noqa: F401  (registers the archs)
from gtplus_arch.diffusion_synthesizer_arch import DiffusionRefinedSynthesizer
from gtplus_arch.lq_diffusion_arch import LQDiffusionUNet, build_noise_scheduler, sample_timesteps
from gtplus_arch.synthesizer_arch import build_synthesizer

TINY_UNET = {
    'sample_size': 16, 'in_channels': 3, 'out_channels': 3, 'layers_per_block': 1, 'block_out_channels': [8, 16],
    'down_block_types': ['DownBlock2D', 'AttnDownBlock2D'], 'up_block_types': ['AttnUpBlock2D', 'UpBlock2D'],
    'attention_head_dim': 8, 'norm_num_groups': 4,
}
HR_SIZE = 64  # the LQ is 16x16 at scale 4


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    return LQDiffusionUNet(**TINY_UNET).eval()


def synth(**kwargs):
    torch.manual_seed(0)  # the random tiny UNet's weights
    options = {'unet': TINY_UNET, 'steps': 10, 'max_strength': 0.5, **kwargs}
    return DiffusionRefinedSynthesizer(**options)


def hr_batch(batch=3, seed=0):
    return torch.rand(batch, 3, HR_SIZE, HR_SIZE, generator=seeded(seed))


# ---------------------------------------------------------------------------------------------------------------- #
# LQDiffusionUNet
# ---------------------------------------------------------------------------------------------------------------- #


def test_unet_from_config_keys():
    net = tiny_unet()
    assert net.size_multiple == 2 and tuple(net.unet.config.block_out_channels) == (8, 16)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    eps = net(x, torch.tensor([3, 200]))
    assert eps.shape == x.shape and eps.dtype == x.dtype
    assert net(x, torch.tensor(5)).shape == x.shape  # one timestep for the batch
    with pytest.raises(ValueError, match='unknown UNet2DModel config key\\(s\\) block_channels'):
        LQDiffusionUNet(block_channels=[8, 16])


def save_pipeline_folder(net, folder):
    """A diffusers pipeline folder as the official LQ-DDPM releases are: model_index.json, unet/, scheduler/."""
    net.save_pretrained(str(folder / 'unet'))
    build_noise_scheduler({'type': 'DDPMScheduler', 'num_train_timesteps': 500}).save_pretrained(
        str(folder / 'scheduler'))
    (folder / 'model_index.json').write_text(json.dumps({'_class_name': 'DDPMPipeline',
                                                          'unet': ['diffusers', 'UNet2DModel'],
                                                          'scheduler': ['diffusers', 'DDPMScheduler']}))


def test_save_pretrained_loads_back_identical_as_a_unet_and_a_pipeline_folder(tmp_path):
    net = tiny_unet()
    x, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([7, 120])
    with torch.no_grad():
        expected = net(x, t)
    folder = net.save_pretrained(str(tmp_path / 'unet_folder'))
    assert sorted(os.listdir(folder)) == ['config.json', 'diffusion_pytorch_model.safetensors']
    assert os.listdir(tmp_path) == ['unet_folder']  # no temporary sibling left behind
    save_pipeline_folder(net, tmp_path / 'pipeline')
    for path in (folder, str(tmp_path / 'pipeline')):
        loaded = LQDiffusionUNet(pretrained_path=path)
        assert loaded.training  # a module starts in training mode, however diffusers returns it
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x, t), expected)
    with pytest.raises(FileExistsError, match='unet_folder exists; pass overwrite=True'):
        net.save_pretrained(folder)
    other = tiny_unet(seed=1)
    other.save_pretrained(folder, overwrite=True)
    with torch.no_grad():
        assert torch.equal(LQDiffusionUNet(pretrained_path=folder).eval()(x, t), other(x, t))
    assert sorted(os.listdir(tmp_path)) == ['pipeline', 'unet_folder']


def test_missing_or_incomplete_folders_are_one_line(tmp_path):
    net = tiny_unet()
    no_config = tmp_path / 'no_config'
    net.save_pretrained(str(no_config))
    os.remove(no_config / 'config.json')
    no_weights = tmp_path / 'no_weights'
    net.save_pretrained(str(no_weights))
    os.remove(no_weights / 'diffusion_pytorch_model.safetensors')
    empty_pipeline = tmp_path / 'pipeline'
    (empty_pipeline / 'unet').mkdir(parents=True)
    cases = [
        (tmp_path / 'missing', FileNotFoundError, 'missing: no such folder'),
        (no_config, FileNotFoundError, 'config.json is missing in .*no_config'),
        (no_weights, FileNotFoundError, 'no weights in .*no_weights \\(looked for diffusion_pytorch_model.safetensors, '
         'diffusion_pytorch_model.bin'),
        (empty_pipeline, FileNotFoundError, 'config.json is missing in .*pipeline/unet'),
    ]
    for path, error, message in cases:
        with pytest.raises(error, match=message) as err:
            LQDiffusionUNet(pretrained_path=str(path))
        assert '\n' not in str(err.value) and str(path) in str(err.value)


def test_path_and_config_keys_together_are_refused(tmp_path):
    folder = tiny_unet().save_pretrained(str(tmp_path / 'unet'))
    with pytest.raises(ValueError, match='either pretrained_path .* or UNet2DModel config keys \\(sample_size\\)'):
        LQDiffusionUNet(pretrained_path=folder, sample_size=32)


def test_noise_scheduler_builder():
    scheduler = build_noise_scheduler({'type': 'DDPMScheduler', 'num_train_timesteps': 1000,
                                       'beta_schedule': 'linear', 'prediction_type': 'epsilon'})
    assert type(scheduler).__name__ == 'DDPMScheduler' and scheduler.config.num_train_timesteps == 1000
    with pytest.raises(ValueError, match="noise_scheduler: unknown scheduler type 'PNDMScheduler'"):
        build_noise_scheduler({'type': 'PNDMScheduler'})
    with pytest.raises(ValueError, match='noise_scheduler: unknown DDPMScheduler config key\\(s\\) beta_shedule'):
        build_noise_scheduler({'type': 'DDPMScheduler', 'beta_shedule': 'linear'})
    with pytest.raises(ValueError, match="needs a 'type' key"):
        build_noise_scheduler({'num_train_timesteps': 1000})


def test_sample_timesteps_stay_below_max_and_cover_it():
    draws = sample_timesteps(20000, 25, seeded(0))
    assert draws.dtype == torch.int64 and draws.shape == (20000, )
    assert int(draws.min()) == 0 and int(draws.max()) == 24
    assert torch.equal(torch.bincount(draws, minlength=25) > 0, torch.ones(25, dtype=torch.bool))
    assert torch.equal(draws, sample_timesteps(20000, 25, seeded(0)))
    assert not torch.equal(draws, sample_timesteps(20000, 25, seeded(1)))
    assert torch.equal(sample_timesteps(50, 1, seeded(3)), torch.zeros(50, dtype=torch.int64))
    with pytest.raises(ValueError, match='max_timestep must be a positive integer'):
        sample_timesteps(4, 0)


# ---------------------------------------------------------------------------------------------------------------- #
# DiffusionRefinedSynthesizer
# ---------------------------------------------------------------------------------------------------------------- #


def test_contract_shape_range_and_seeds():
    s = synth()
    hr = hr_batch()
    out = s(hr, seeded(1))
    assert out.shape == (3, 3, HR_SIZE // 4, HR_SIZE // 4) and out.dtype == hr.dtype
    assert 0 <= out.min() and out.max() <= 1 and torch.equal(out, (out * 255).round() / 255)
    assert torch.equal(out, s(hr, seeded(1)))  # bit for bit
    assert not torch.equal(out, s(hr, seeded(2)))
    assert s(hr).shape == out.shape  # generator=None: torch's global RNG
    s.train()
    assert s.training and not s.unet.training and not s.unet.unet.training
    assert s.min_size() == s.first_stage.min_size()


def test_max_strength_zero_returns_the_first_stage_output():
    s = synth(max_strength=0)
    hr = hr_batch()
    assert torch.equal(s(hr, seeded(4)), s.first_stage(hr, seeded(4)))


def test_refine_strength_zero_is_the_identity_and_strength_moves_further():
    s = synth(steps=20)
    lq = torch.rand(2, 3, 15, 13, generator=seeded(5))  # odd sizes: reflect-padded to the UNet's multiple
    assert s.refine(lq, 0.0) is lq
    assert s.refine(lq, 0.04) is lq  # int(20 * 0.04) = 0 steps, diffusers img2img's rule
    low = (s.refine(lq, 0.05, seeded(6)) - lq).abs().mean()
    high = (s.refine(lq, 0.5, seeded(6)) - lq).abs().mean()
    assert s.refine(lq, 0.5, seeded(6)).shape == lq.shape
    assert 0 < low < high
    with pytest.raises(ValueError, match='strength must be in \\[0, 1\\]'):
        s.refine(lq, 1.5)


def count_unet_calls(s):
    calls = []
    s.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].size(0)))
    return calls


@pytest.mark.parametrize('sampler', ['UniPCMultistepScheduler', 'DDIMScheduler', 'DDPMScheduler'])
def test_unet_calls_are_the_sum_of_group_steps_for_each_sampler(sampler):
    s = synth(sampler={'type': sampler}, steps=12, max_strength=0.6)
    calls = count_unet_calls(s)
    hr = hr_batch(batch=4)
    out = s(hr, seeded(8))
    # The same generator, replayed: first-stage draws, then the per-image step counts.
    generator = seeded(8)
    s.first_stage(hr, generator)
    ks = s.draw_steps(4, generator)
    assert all(1 <= k <= int(12 * 0.6) for k in ks) and len(set(ks)) > 1
    assert len(calls) == sum(set(ks))  # one batched trajectory per distinct k: cost ∝ strength * steps
    assert sum(calls) == sum(ks)  # every image is denoised over exactly its k steps
    assert torch.equal(out, s(hr, seeded(8))) and 0 <= out.min() and out.max() <= 1
    calls.clear()
    s.refine(torch.rand(2, 3, 16, 16), 0.5, seeded(9))
    assert calls == [2] * 6  # int(12 * 0.5) steps


def test_strength_floor_gives_one_step():
    s = synth(steps=49, max_strength=0.01)  # U * 0.01 < 1/49 always; int(49 * (1 / 49)) rounds down to 0
    assert s.draw_steps(16, seeded(0)) == [1] * 16


def test_options_rebuild_and_bad_options(tmp_path):
    s = synth(sampler={'type': 'DDIMScheduler', 'timestep_spacing': 'trailing'})
    prov = s.provenance()
    json.dumps(prov)
    rebuilt = build_synthesizer(prov)
    assert rebuilt.provenance() == prov
    rebuilt.load_state_dict(s.state_dict())
    hr = hr_batch(batch=2)
    assert torch.equal(rebuilt(hr, seeded(3)), s(hr, seeded(3)))
    assert prov['first_stage']['type'] == 'RealESRGANSynthesizer' and prov['first_stage']['preset'] == 'stablesr'
    with pytest.raises(ValueError, match='needs unet'):
        DiffusionRefinedSynthesizer()
    with pytest.raises(ValueError, match="sampler: unknown type 'PNDMScheduler'"):
        synth(sampler={'type': 'PNDMScheduler'})
    with pytest.raises(ValueError, match='sampler: unknown DDIMScheduler config key\\(s\\) eta \\('):
        synth(sampler={'type': 'DDIMScheduler', 'eta': 0})
    with pytest.raises(ValueError, match='first_stage .* has scale 2, but scale is 4'):
        synth(first_stage={'type': 'BicubicSynthesizer', 'scale': 2})
    with pytest.raises(ValueError, match='max_strength must be in \\[0, 1\\]'):
        synth(max_strength=1.5)


def test_pipeline_folder_brings_its_scheduler(tmp_path):
    save_pipeline_folder(tiny_unet(), tmp_path / 'pipeline')
    s = DiffusionRefinedSynthesizer(unet={'pretrained_path': str(tmp_path / 'pipeline')}, steps=5,
                                    first_stage={'type': 'BicubicSynthesizer'})
    assert s.noise_scheduler.config.num_train_timesteps == 500 and s.weights_module() is None
    assert s.provenance()['noise_scheduler'] is None  # a rebuild reads the folder again
    assert s.new_sampler().config.num_train_timesteps == 500
    assert type(s.new_sampler()).__name__ == 'UniPCMultistepScheduler'
    hr = hr_batch(batch=2)
    assert torch.equal(build_synthesizer(s.provenance())(hr, seeded(1)), s(hr, seeded(1)))


def test_load_synthesizer_loads_a_pth_and_refuses_one_with_a_folder(tmp_path):
    from gtplus_models.checkpoints import CheckpointError
    from gtplus_models.synthesis import load_synthesizer

    trained = tiny_unet(seed=3)
    torch.save({'params': trained.state_dict()}, str(tmp_path / 'net_g_ema.pth'))
    block = {'type': 'DiffusionRefinedSynthesizer', 'unet': {'type': 'LQDiffusionUNet', **TINY_UNET}, 'steps': 4,
             'first_stage': {'type': 'BicubicSynthesizer'}}
    s = load_synthesizer(block, str(tmp_path / 'net_g_ema.pth'))
    assert s.weights_module() is s.unet and not s.training
    for name, value in trained.state_dict().items():
        assert torch.equal(s.unet.state_dict()[name], value)
    assert s(hr_batch(batch=1), seeded(0)).shape == (1, 3, 16, 16)
    with pytest.raises(FileNotFoundError, match='--synth-weights is required'):
        load_synthesizer(block)
    folder = trained.save_pretrained(str(tmp_path / 'export'))
    with pytest.raises(CheckpointError, match='DiffusionRefinedSynthesizer has no weights to load'):
        load_synthesizer({**block, 'unet': {'pretrained_path': folder}}, str(tmp_path / 'net_g_ema.pth'))
    assert load_synthesizer({**block, 'unet': {'pretrained_path': folder}}).weights_module() is None
