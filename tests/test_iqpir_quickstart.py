"""The `iqpir` quickstart pipeline: its templates agree with it and with each other, its world is the uneven GT
set it claims, and it runs end to end (shortened)."""
import json

import numpy as np
import pytest
import yaml
from conftest import run_cli


def filled(tmp_path, name):
    from gtplus_models.quickstart.common import fill_template
    from gtplus_models.quickstart.iqpir import TEMPLATES
    with open(fill_template(str(tmp_path), TEMPLATES, name)) as f:
        return yaml.safe_load(f)


def test_the_control_is_stage2_without_the_score_and_the_quality_loss(tmp_path):
    from gtplus_models.quickstart.iqpir import CONTROL
    stage1, stage2, control = (filled(tmp_path, name) for name in ('stage1', 'stage2', CONTROL))
    assert stage2['network_g']['score_embedding'] is True and control['network_g']['score_embedding'] is False
    assert stage2['train']['quality_opt']['metrics'][0]['name'] == 'niqe' and control['train']['quality_opt'] is None
    assert 0 < stage2['train']['quality_start_iter'] < stage2['train']['total_iter']

    def budget(opt):
        """Everything that must be equal for a fair comparison."""
        opt = json.loads(json.dumps(opt))
        opt.pop('name')
        opt['network_g'].pop('score_embedding')
        for key in ('quality_opt', 'quality_loss_weight', 'quality_start_iter'):
            opt['train'].pop(key, None)
        return opt

    assert budget(stage2) == budget(control)
    # Stage 2 decodes with stage 1's codebooks and decoder: the same autoencoder sizes, and stage 1's checkpoint.
    autoencoder = {k: v for k, v in stage2['network_g'].items() if k in stage1['network_g']}
    assert autoencoder == dict(stage1['network_g'], type='IQPIRNet') == dict(stage2['network_vqgan'], type='IQPIRNet')
    assert stage2['path']['pretrain_network_vqgan'].endswith('experiments/quickstart_stage1/models/net_g_latest.pth')
    assert stage1['datasets']['train']['dataroot_gt'] == stage2['datasets']['train']['dataroot_gt']
    assert stage2['datasets']['train']['gt_size'] == stage2['network_g']['img_size'] >= 96  # NIQE's smallest side


def test_the_gt_set_is_uneven_and_the_test_lq_is_fixed(tmp_path):
    from gtplus_models.quickstart.common import sample_photos
    from gtplus_models.quickstart.iqpir import (
        GT_QUALITIES,
        heldout_degradation,
        heldout_lq,
        uneven_gt,
    )
    photos = {k: v for k, v in sample_photos(128).items() if k in ('astronaut', 'chelsea')}
    gt = uneven_gt(photos)
    assert sorted(gt) == sorted(f'{k}_{q}' for k in photos for q in GT_QUALITIES)
    np.testing.assert_array_equal(gt['chelsea_q2'], photos['chelsea'])  # the pristine quality is the photo itself

    def sharpness(img):
        return float(np.abs(np.diff(img, axis=1)).mean())

    for key in photos:  # each lower quality is blurrier
        assert sharpness(gt[f'{key}_q2']) > sharpness(gt[f'{key}_q1']) > sharpness(gt[f'{key}_q0'])
    params = heldout_degradation(str(tmp_path))
    first, again = heldout_lq(photos, params), heldout_lq(photos, params)
    for key in photos:
        np.testing.assert_array_equal(first[key], again[key])  # seeded per key: the same test on every run
        assert first[key].shape == photos[key].shape
    assert not np.array_equal(first['astronaut'], photos['astronaut'])


def test_size_rule():
    from gtplus_models.quickstart.iqpir import check_size
    check_size(128)
    for size in (120, 132):
        with pytest.raises(ValueError, match=f'at least 128 for the iqpir pipeline, got {size}'):
            check_size(size)


def test_quickstart_iqpir_preview_runs_every_stage(tmp_path):
    from gtplus_models.quickstart.iqpir import TARGETS
    out = tmp_path / 'qs'
    run_cli(['quickstart', str(out), '--pipeline', 'iqpir', '--size', '128', '--iters', '2'], cwd=tmp_path,
            timeout=900)
    report = json.loads((out / 'report.json').read_text())
    targets = [f'target_{t:g}' for t in TARGETS]
    assert set(report['mean']) == {'lq', 'control', *targets}
    assert report['held_out_images'] == ['chelsea', 'stereo_motorcycle']
    assert set(report['spearman']) == {'psnr_vs_pristine', 'ssim_vs_pristine', 'niqe', 'piqe'}
    assert all(rho is None or -1 <= rho <= 1 for rho in report['spearman'].values())
    assert list(report['sweep']) == [f'{t:g}' for t in TARGETS]
    assert [row.split(' (')[0] for row in report['gt_scores']] == ['q2', 'q1', 'q0']
    for name, values in report['mean'].items():
        assert 5 < values['psnr_vs_pristine'] < 40, name
    for path in ('figures/sweep.png', 'figures/gt_scores.png', 'restored/method/sweep/chelsea.png',
                 'restored/control/score_1.00/chelsea.png', 'options/stage2_control.yml', 'report.md'):
        assert (out / path).is_file(), path
    assert 'Spearman' in (out / 'report.md').read_text()
