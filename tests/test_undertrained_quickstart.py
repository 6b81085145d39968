"""The `undertrained` quickstart pipeline: its templates agree with it, and it runs end to end (shortened)."""
import json
import os

import cv2
import pytest
import yaml
from conftest import run_cli


def filled(tmp_path, name):
    from gtplus_models.quickstart.common import fill_template
    from gtplus_models.quickstart.undertrained import TEMPLATES
    with open(fill_template(str(tmp_path), TEMPLATES, name)) as f:
        return yaml.safe_load(f)


def test_templates_agree_with_the_pipeline_and_fine_tunes_differ_only_in_the_synthesizer(tmp_path):
    from gtplus_models.quickstart.undertrained import FINETUNE_EPOCH, FINETUNES, SWEEP_EPOCHS, snapshot_path
    vqvae2 = filled(tmp_path, 'vqvae2')
    assert vqvae2['train']['snapshot_epochs'] == list(SWEEP_EPOCHS) and FINETUNE_EPOCH in SWEEP_EPOCHS
    from gtplus_models.reconstruction_model import iterations_per_epoch
    data = vqvae2['datasets']['train']  # every snapshot epoch is reached with the 6 training photos
    per_epoch = iterations_per_epoch(6, data['batch_size_per_gpu'], 1, data['dataset_enlarge_ratio'])
    assert vqvae2['train']['total_iter'] >= max(SWEEP_EPOCHS) * per_epoch
    pretrain = filled(tmp_path, 'pretrain')
    tunes = {name: filled(tmp_path, f'finetune_{name}') for name in FINETUNES}
    method = tunes['undertrained']
    assert method['path']['pretrain_network_synth'] == snapshot_path(str(tmp_path), FINETUNE_EPOCH)
    assert method['network_synth']['reconstruction'] == vqvae2['network_g']
    assert method['network_synth']['first_stage'] == vqvae2['network_first_stage']

    def budget(opt):
        """What must be equal for a fair comparison: everything but the name and the synthesizer."""
        opt = json.loads(json.dumps(opt))
        opt.pop('name')
        opt.pop('network_synth')
        opt['path'].pop('pretrain_network_synth', None)
        return opt

    assert budget(tunes['bicubic']) == budget(tunes['realesrgan']) == budget(method)
    for opt in tunes.values():  # all start from the bicubic-pretrained network, the same architecture
        assert opt['path']['pretrain_network_g'].endswith('experiments/quickstart_pretrain/models/net_g_latest.pth')
        assert opt['network_g'] == pretrain['network_g']
    assert tunes['bicubic']['network_synth'] == pretrain['network_synth'] == {'type': 'BicubicSynthesizer', 'scale': 4}
    assert tunes['realesrgan']['network_synth']['type'] == 'RealESRGANSynthesizer'


def test_size_must_suit_the_camera_mosaic():
    from gtplus_models.quickstart.undertrained import check_size
    check_size(128)
    for size in (120, 132):
        with pytest.raises(ValueError, match=f'--size must be a multiple of 8 and at least 128 .* got {size}'):
            check_size(size)


def test_report_markdown_renders_a_table_with_its_own_columns():
    from gtplus_models.quickstart.report import report_markdown
    report = {'metrics': {'niqe': {'direction': 'lower is better'}}, 'sources': {'a': 'A'},
              'mean': {'a': {'niqe': 5.0}}, 'summary': 'S', 'verdicts': ['v'],
              'tables': [{'title': 'T', 'column': 'set', 'headers': {'delta_e_mean': 'mean ΔE'},
                          'rows': {'camera': {'delta_e_mean': 2.5}}}]}
    text = report_markdown(report, 'R')
    assert '| source | niqe (↓) |\n| --- | --- |\n| A | 5.0000 |' in text
    assert '| set | mean ΔE |\n| --- | --- |\n| camera | 2.5000 |' in text


def test_quickstart_undertrained_preview_runs_every_stage(tmp_path):
    out = tmp_path / 'qs'
    run_cli(['quickstart', str(out), '--pipeline', 'undertrained', '--size', '128', '--iters', '3'], cwd=tmp_path,
            timeout=900)
    report = json.loads((out / 'report.json').read_text())
    assert set(report['mean']) == {'pretrained', 'bicubic', 'realesrgan', 'undertrained'}
    assert set(report['metrics']) == {'psnr_vs_pristine', 'ssim_vs_pristine', 'niqe', 'piqe'}
    assert report['held_out_images'] == ['chelsea', 'rocket'] and len(report['verdicts']) == 16
    for name, values in report['mean'].items():
        assert 10 < values['psnr_vs_pristine'] < 40, name
    sets = report['degradations']['sets']
    assert list(sets)[:3] == ['camera (real)', 'bicubic', 'Real-ESRGAN'] and len(sets) == 3 + 6
    assert sets['bicubic']['delta_e_mean'] < 0.5  # bicubic LR against bicubic HR↓: the same image up to rounding
    assert all(0 <= s['diversity'] <= 1 for s in sets.values())
    for figure in ('comparison.png', 'degradation_sweep.png'):
        image = cv2.imread(str(out / 'figures' / figure))
        assert image is not None and image.shape[0] > 128, figure
    for name in ('report.md', 'samples.png', 'delta_e_hist.png'):
        assert (out / 'degradation_report' / name).is_file(), name
    assert sorted(os.listdir(out / 'sr' / 'undertrained')) == ['chelsea.png', 'rocket.png']
    assert 'camera LR' in (out / 'report.md').read_text() or 'camera (real)' in (out / 'report.md').read_text()
    # A rerun finds every stage done and only rebuilds the report.
    proc = run_cli(['quickstart', str(out), '--pipeline', 'undertrained', '--size', '128', '--iters', '3'],
                   cwd=tmp_path, timeout=300)
    assert 'quickstart: training' not in proc.stderr
    assert json.loads((out / 'report.json').read_text())['mean'] == report['mean']
