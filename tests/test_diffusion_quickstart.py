"""The `diffusion` quickstart pipeline: its templates agree with it, and it runs end to end (shortened)."""
import json
import os

import cv2
import yaml
from conftest import run_cli


def filled(tmp_path, name):
    from gtplus_models.quickstart.common import fill_template
    from gtplus_models.quickstart.diffusion import TEMPLATES
    with open(fill_template(str(tmp_path), TEMPLATES, name)) as f:
        return yaml.safe_load(f)


def test_the_method_refines_the_controls_degradation_and_fine_tunes_differ_only_in_their_pairs(tmp_path):
    from gtplus_models.quickstart.camera_sr import pair_prefix
    from gtplus_models.quickstart.diffusion import FINETUNES, PAIR_SETS
    control = filled(tmp_path, 'synth_stablesr')['network_synth']
    method = filled(tmp_path, 'synth_diffusion')['network_synth']
    assert method['type'] == 'DiffusionRefinedSynthesizer' and method['first_stage'] == control
    assert method['unet']['pretrained_path'] == str(tmp_path / 'experiments/quickstart_ddpm/models/diffusers_latest')
    ddpm = filled(tmp_path, 'ddpm')
    assert ddpm['datasets']['train']['dataroot_gt'] == str(tmp_path / 'data/train_real_lq.lmdb')  # real LQ, no HR
    # the DDPM is trained on every timestep the synthesizer noises to (t = strength * T, strength <= max_strength)
    assert method['max_strength'] * ddpm['noise_scheduler']['num_train_timesteps'] <= ddpm['train']['max_timestep']
    tunes = {name: filled(tmp_path, f'finetune_{name}') for name in FINETUNES}

    def budget(opt, name):
        opt = json.loads(json.dumps(opt))
        opt.pop('name')
        data = opt['datasets']['train']
        assert (data['dataroot_gt'], data['dataroot_lq']) == (f'{pair_prefix(str(tmp_path), name)}_gt.lmdb',
                                                             f'{pair_prefix(str(tmp_path), name)}_lq.lmdb')
        for key in ('name', 'dataroot_gt', 'dataroot_lq'):
            data.pop(key)
        return opt

    assert budget(tunes['stablesr'], 'stablesr') == budget(tunes['diffusion'], 'diffusion')
    assert tunes['stablesr']['network_g'] == filled(tmp_path, 'pretrain')['network_g']
    assert set(FINETUNES) < set(PAIR_SETS)


def test_quickstart_diffusion_preview_runs_every_stage(tmp_path):
    out = tmp_path / 'qs'
    run_cli(['quickstart', str(out), '--pipeline', 'diffusion', '--size', '128', '--iters', '3'], cwd=tmp_path,
            timeout=900)
    report = json.loads((out / 'report.json').read_text())
    assert set(report['mean']) == {'pretrained', 'stablesr', 'diffusion'}
    assert report['held_out_images'] == ['chelsea', 'rocket'] and len(report['verdicts']) == 12
    sets = report['degradations']['sets']
    assert list(sets) == ['camera (real)', 'bicubic', 'Real-ESRGAN stablesr', 'diffusion-refined']
    assert (out / 'experiments/quickstart_ddpm/models/diffusers_latest/unet/config.json').is_file()
    from gtplus_data.image_source import ImageSource
    stablesr = ImageSource(str(out / 'data/pairs/stablesr_lq.lmdb'))
    refined = ImageSource(str(out / 'data/pairs/diffusion_lq.lmdb'))
    assert stablesr.keys == refined.keys and len(refined.keys) == 6 * 8
    for figure in ('comparison.png', 'lr_sets.png', 'strength_sweep.png'):
        image = cv2.imread(str(out / 'figures' / figure))
        assert image is not None and image.shape[0] > 64, figure
    assert sorted(os.listdir(out / 'sr' / 'diffusion')) == ['chelsea.png', 'rocket.png']
    proc = run_cli(['quickstart', str(out), '--pipeline', 'diffusion', '--size', '128', '--iters', '3'],
                   cwd=tmp_path, timeout=300)
    assert 'quickstart: training' not in proc.stderr
    assert json.loads((out / 'report.json').read_text())['mean'] == report['mean']
