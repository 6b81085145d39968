"""The main job end to end, shortened: every stage runs for real on 128² photos with 3 iterations each."""
import json
import os

import cv2

from conftest import run_cli


def test_quickstart_preview_runs_every_stage(tmp_path):
    out = tmp_path / 'qs'
    run_cli(['quickstart', str(out), '--size', '128', '--iters', '3'], cwd=tmp_path, timeout=900)
    report = json.loads((out / 'report.json').read_text())
    assert set(report['mean']) == {'gt', 'enhanced_gt', 'restorer', 'restorer_ornet'}
    for name, spec in report['metrics'].items():
        assert spec['direction'] in ('higher is better', 'lower is better'), name
    assert report['mean']['gt']['psnr_vs_gt'] is None  # the GT against itself: identical, not a number
    assert 0 < report['mean']['gt']['psnr_vs_pristine'] < 60
    assert report['held_out_images'] == ['chelsea', 'rocket'] and len(report['verdicts']) >= 10
    for figure in ('comparison.png', 'masks.png', 'sr_variants.png', 'c_sweep.png', 'enhanced_gt_sweep.png'):
        image = cv2.imread(str(out / 'figures' / figure))
        assert image is not None and image.shape[0] > 128, figure
    assert sorted(os.listdir(out / 'refine' / 'refined_c0.30')) == ['chelsea.png', 'rocket.png']
    # A rerun finds every stage done and only rebuilds the report.
    proc = run_cli(['quickstart', str(out), '--size', '128', '--iters', '3'], cwd=tmp_path, timeout=300)
    assert 'quickstart: training' not in proc.stderr
    assert json.loads((out / 'report.json').read_text())['mean'] == report['mean']
