"""gtplus score: side file format, histogram, kill + resume equals one clean run, LMDB input, clear input errors."""
import json
import os
import shutil
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest

from conftest import gtplus_exe, run_cli
from gtplus_data.sample_photos import load_sample_photo, sample_photo_names

SIZE = 160


def write_crops(folder, per_photo=1):
    """``per_photo`` SIZExSIZE crops of each sample photo as PNG; returns the keys."""
    os.makedirs(folder, exist_ok=True)
    keys = []
    for name in sample_photo_names():
        img = load_sample_photo(name)
        for index in range(per_photo):
            top = index * (img.shape[0] - SIZE) // max(1, per_photo)
            key = f'{name}_{index}'
            cv2.imwrite(os.path.join(folder, f'{key}.png'), img[top:top + SIZE, :SIZE, ::-1])
            keys.append(key)
    return sorted(keys)


@pytest.fixture(scope='module')
def scored(tmp_path_factory):
    """One clean run over 8 crops with --ensemble; returns (folder, keys, payload, completed process)."""
    folder = str(tmp_path_factory.mktemp('score') / 'photos')
    keys = write_crops(folder)
    proc = run_cli(['score', folder, '--metrics', 'niqe,piqe', '--ensemble'], cwd=os.path.dirname(folder))
    with open(os.path.join(folder, 'quality_scores.json')) as f:
        return folder, keys, json.load(f), proc


def test_side_file_format(scored):
    folder, keys, payload, _ = scored
    assert sorted(payload) == ['description', 'ensemble', 'format', 'metrics', 'records']
    assert payload['metrics'] == {'niqe': {'lower_better': True, 'weights_path': None},
                                  'piqe': {'lower_better': True, 'weights_path': None}}
    assert list(payload['records']) == keys
    assert not os.path.exists(os.path.join(folder, 'quality_scores.json.partial.json'))
    bounds = payload['ensemble']['bounds']
    for record in payload['records'].values():
        assert sorted(record) == ['ensemble', 'niqe', 'piqe']
        expected = np.mean([1 - (record[n] - bounds[n][0]) / (bounds[n][1] - bounds[n][0]) for n in ('niqe', 'piqe')])
        assert record['ensemble'] == pytest.approx(expected, abs=1e-9)
        assert 0 <= record['ensemble'] <= 1
    for name in ('niqe', 'piqe'):
        values = [r[name] for r in payload['records'].values()]
        assert bounds[name] == [min(values), max(values)]


def test_side_file_readable_with_the_lmdb_writer_helper(scored):
    from gtplus_data.side_file import read_side_file
    folder, keys, payload, _ = scored
    assert read_side_file(folder, 'quality_scores') == payload['records']


def test_histogram_png_is_a_valid_image_beside_the_folder(scored):
    folder, keys, _, _ = scored
    png = f'{folder}_quality_scores_hist.png'
    img = cv2.imread(png)
    assert img is not None and img.shape[1] > img.shape[0] > 100  # three panels side by side
    assert sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith('.png')) == keys


def test_progress_bar_shown(scored):
    assert 'score' in scored[3].stderr and 'img' in scored[3].stderr


def test_sigkill_midway_then_rerun_equals_uninterrupted_run(tmp_path):
    clean, killed = str(tmp_path / 'clean'), str(tmp_path / 'killed')
    from gtplus_models.tools.scoring import score_dataset
    write_crops(clean, per_photo=2)
    shutil.copytree(clean, killed)
    args = ['score', '--metrics', 'niqe,piqe', '--ensemble', '--flush-every', '2']
    score_dataset(clean, ['niqe', 'piqe'], ensemble=True, progress=False)  # the same code as `gtplus score`

    partial = os.path.join(killed, 'quality_scores.json.partial.json')
    proc = subprocess.Popen([gtplus_exe()] + args + [killed], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.exists(partial) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(partial) as f:
        done = len(json.load(f)['records'])
    assert 0 < done < 16 and not os.path.exists(os.path.join(killed, 'quality_scores.json'))

    run_cli(args + [killed], cwd=tmp_path)
    with open(os.path.join(clean, 'quality_scores.json'), 'rb') as a, \
            open(os.path.join(killed, 'quality_scores.json'), 'rb') as b:
        assert a.read() == b.read()
    assert not os.path.exists(partial)


def test_lmdb_input_writes_side_file_inside_the_lmdb(tmp_path):
    from gtplus_data.image_source import ImageSource
    from gtplus_data.lmdb_writer import write_images
    from gtplus_data.side_file import read_side_file
    from gtplus_models.tools.scoring import score_dataset
    folder = str(tmp_path / 'photos')
    keys = write_crops(folder)
    source = ImageSource(folder)
    lmdb = str(tmp_path / 'photos.lmdb')
    write_images(lmdb, ((k, source.read_bytes(k)) for k in source.keys), total=len(source))
    payload = score_dataset(lmdb, ['niqe'], progress=False)
    assert os.path.isfile(os.path.join(lmdb, 'quality_scores.json'))
    assert os.path.isfile(os.path.join(lmdb, 'quality_scores_hist.png'))
    assert list(read_side_file(lmdb, 'quality_scores')) == keys
    assert payload['ensemble'] is None
    folder_payload = score_dataset(folder, ['niqe'], out=str(tmp_path / 'f.json'), plot=str(tmp_path / 'f.png'),
                                   progress=False)
    assert folder_payload['records'] == payload['records']  # lossless PNG either way: same pixels, same scores


def make_bad_input(tmp_path, setup):
    data = tmp_path / 'data'
    if setup:
        data.mkdir()
        cv2.imwrite(str(data / 'good.png'), np.full((128, 128, 3), 128, np.uint8))
    if setup == 'corrupt':
        (data / 'bad.png').write_bytes(b'\x89PNG not really')
    return str(data)


def test_missing_data_exits_2_with_one_line(tmp_path):
    proc = run_cli(['score', 'missing_dir'], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith('gtplus score: error:') and 'missing_dir' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('setup, args, message', [
    ('corrupt', [], 'bad.png'),
    ('ok', ['--metrics', 'no_such_metric'], 'unknown pyiqa metric'),
    ('ok', ['--weights', 'musiq'], 'NAME=PATH'),
    ('ok', ['--metrics', 'musiq', '--weights', 'musiq=nope.pth'], 'nope.pth'),
])
def test_bad_input_returns_2_with_one_line(tmp_path, capsys, setup, args, message):
    from gtplus_models.cli import main
    assert main(['score', make_bad_input(tmp_path, setup)] + args) == 2  # in process: no interpreter start-up
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith('gtplus score: error:')]
    assert len(lines) == 1 and message in lines[0], lines
