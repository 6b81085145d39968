"""The main job end to end, shortened: every stage runs for real on 128² photos with 3 iterations each."""
import json
import os

import cv2
import pytest

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
    for figure in ('comparison.png', 'masks.png', 'sr_variants.png', 'detail_variants.png', 'c_sweep.png',
                   'enhanced_gt_sweep.png'):
        image = cv2.imread(str(out / 'figures' / figure))
        assert image is not None and image.shape[0] > 128, figure
    assert sorted(os.listdir(out / 'refine' / 'refined_c0.30')) == ['chelsea.png', 'rocket.png']
    # A rerun finds every stage done and only rebuilds the report.
    proc = run_cli(['quickstart', str(out), '--size', '128', '--iters', '3'], cwd=tmp_path, timeout=300)
    assert 'quickstart: training' not in proc.stderr
    assert json.loads((out / 'report.json').read_text())['mean'] == report['mean']


def test_pipeline_choice_runs_one_into_out_or_all_into_out_name(tmp_path, monkeypatch):
    """--pipeline NAME writes into OUT itself (as `make quickstart` expects); all runs each into OUT/NAME."""
    import types

    import gtplus_models.quickstart as quickstart
    calls = []

    def fake(name):
        return types.SimpleNamespace(NAME=name, run=lambda out, **kw: calls.append((name, out, kw)) or {'n': name})

    monkeypatch.setattr(quickstart, 'pipelines', lambda: {'first': fake('first'), 'second': fake('second')})
    assert quickstart.run_quickstart(str(tmp_path), 'second', size=128) == {'second': {'n': 'second'}}
    assert calls == [('second', str(tmp_path), {'size': 128})]
    calls.clear()
    assert list(quickstart.run_quickstart(str(tmp_path), 'all', iters=3)) == ['first', 'second']
    assert calls == [('first', str(tmp_path / 'first'), {'iters': 3}), ('second', str(tmp_path / 'second'),
                                                                       {'iters': 3})]
    with pytest.raises(ValueError, match="unknown quickstart pipeline 'third'; choose from first, second or all"):
        quickstart.run_quickstart(str(tmp_path), 'third')


def test_every_registered_pipeline_has_templates_and_a_run():
    import inspect

    import gtplus_models.quickstart as quickstart
    from gtplus_models.quickstart.common import TEMPLATES
    found = quickstart.pipelines()
    assert quickstart.DEFAULT_PIPELINE in found
    for name, module in found.items():
        assert os.path.isdir(os.path.join(TEMPLATES, module.TEMPLATES)), name
        assert list(inspect.signature(module.run).parameters) == ['out', 'size', 'iters', 'cond', 'photos',
                                                                  'holdout'], name


def test_unknown_pipeline_flag_is_a_usage_error(tmp_path):
    proc = run_cli(['quickstart', str(tmp_path / 'q'), '--pipeline', 'nope'], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr
    assert not (tmp_path / 'q').exists()


def write_photo_folder(folder, names=('alpha', 'beta', 'gamma'), size=150):
    """Three small 'photographs' (crops of the embedded photos, each a different scene) as PNG files."""
    from gtplus_data.image_util import write_png
    from gtplus_data.sample_photos import load_sample_photo, sample_photo_names
    for name, source in zip(names, sample_photo_names()):
        write_png(os.path.join(folder, f'{name}.png'), load_sample_photo(source)[:size, :size + 10])
    return folder


def test_own_photos_run_the_pipeline_holding_out_by_photo(tmp_path):
    photos = write_photo_folder(str(tmp_path / 'mine'))
    out = tmp_path / 'qs'
    run_cli(['quickstart', str(out), '--photos', photos, '--holdout', 'beta', '--size', '128', '--iters', '2'],
            cwd=tmp_path, timeout=900)
    report = json.loads((out / 'report.json').read_text())
    assert report['held_out_images'] == ['beta'] and report['settings']['photos'] == photos
    assert sorted(os.listdir(out / 'refine' / 'refined_c0.30')) == ['beta.png']
    from gtplus_data.image_source import ImageSource
    assert ImageSource(str(out / 'data' / 'train_gt.lmdb')).keys == ['alpha', 'gamma']
    # The options written for the user are complete YAML: no placeholder left, and they say where they came from.
    for name in ('restorer', 'enhancer', 'cfmg', 'ornet'):
        text = (out / 'options' / f'{name}.yml').read_text()
        assert '${' not in text and text.startswith('# Written by `gtplus quickstart`'), name
        assert str(out) in text


def test_own_photos_errors_name_the_problem(tmp_path):
    from gtplus_models.quickstart.common import load_photos, split_photos
    photos = write_photo_folder(str(tmp_path / 'mine'))
    loaded = load_photos(128, photos)
    assert sorted(loaded) == ['alpha', 'beta', 'gamma'] and loaded['alpha'].shape == (128, 128, 3)
    with pytest.raises(ValueError, match='--holdout names no photo: delta; the photos are: alpha, beta, gamma'):
        split_photos(loaded, ['delta'])
    with pytest.raises(ValueError, match='leaves no photo to train on'):
        split_photos(loaded, ['alpha', 'beta', 'gamma'])
    assert sorted(split_photos(loaded)[1]) == ['beta']  # every fourth by name, starting at the second
    with pytest.raises(ValueError, match='smaller than --size 200'):
        load_photos(200, photos)
    os.rename(os.path.join(photos, 'alpha.png'), os.path.join(photos, 'al pha.png'))
    with pytest.raises(ValueError, match='rename .*al pha.png'):
        load_photos(128, photos)
    proc = run_cli(['quickstart', str(tmp_path / 'q'), '--photos', str(tmp_path / 'none')], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith('gtplus quickstart: error:') and 'none' in proc.stderr


def test_report_rules_count_the_images_that_beat_a_control():
    from gtplus_models.quickstart.report import beats_on, beats_reference, share_beating
    gt = {'a': {'psnr_vs_pristine': 30.0, 'niqe': 8.0, 'piqe': 40.0},
          'b': {'psnr_vs_pristine': 25.0, 'niqe': 6.0, 'piqe': 30.0},
          'c': {'psnr_vs_pristine': 28.0, 'niqe': 7.0, 'piqe': 20.0},
          'd': {'psnr_vs_pristine': 28.0, 'niqe': 7.0, 'piqe': 20.0}}
    new = {'a': {'psnr_vs_pristine': 30.01, 'niqe': 9.0, 'piqe': 50.0},   # PSNR up: better target
           'b': {'psnr_vs_pristine': 24.95, 'niqe': 5.0, 'piqe': 29.0},   # NIQE down, PSNR within 0.1 dB
           'c': {'psnr_vs_pristine': 27.85, 'niqe': 6.0, 'piqe': 19.0},   # NIQE down but PSNR 0.15 dB lower
           'd': {'psnr_vs_pristine': 28.0, 'niqe': 6.0, 'piqe': 21.0}}    # NIQE down, PIQE up
    assert [beats_reference(new[k], gt[k]) for k in 'abcd'] == [True, True, False, True]
    assert share_beating(new, gt, beats_reference) == 0.75
    assert [beats_on(new[k], gt[k]) for k in 'abcd'] == [False, True, True, False]
    assert share_beating(new, gt, beats_on) == 0.5
    assert share_beating(new, gt, lambda n, o: beats_on(n, o, ('niqe', ))) == 0.75


def test_cfmg_and_ornet_templates_train_on_the_pipelines_source_set(tmp_path):
    """The templates list the variant LMDBs of SOURCE_SET, which the pipeline mixes at test time: they must agree."""
    import yaml

    from gtplus_models.quickstart.common import fill_template
    from gtplus_models.quickstart.enhanced_supervision import SOURCE_SETS, TEMPLATES, set_roots, source_roots
    expected = source_roots(str(tmp_path), 'train')
    assert expected == set_roots(str(tmp_path), 'train', 'both') and len(expected) == 6
    assert set_roots(str(tmp_path), 'train', 'standin') + set_roots(str(tmp_path), 'train', 'detail') == expected
    assert SOURCE_SETS == ('standin', 'detail', 'both')
    for stage, key in (('cfmg', 'network_g'), ('ornet', 'network_cfmg')):
        with open(fill_template(str(tmp_path), TEMPLATES, stage)) as f:
            opt = yaml.safe_load(f)
        assert opt['datasets']['train']['dataroot_variants'] == expected
        assert opt[key]['num_sources'] == len(expected) + 1
    with pytest.raises(ValueError, match="unknown source set 'all'"):
        set_roots(str(tmp_path), 'train', 'all')
