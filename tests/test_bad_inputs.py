"""Bad input across the verbs: exit code 2, one line naming the offending path, key or flag, no traceback, and no
output left behind that a rerun would trust. New verbs add their rows to BAD_INPUTS."""
import os

import pytest

from conftest import run_cli

# (id, argv with {empty} = an empty folder, {out} = an output path inside tmp_path, what stderr must name)
BAD_INPUTS = [
    ('make-lmdb-empty-folder', ['make-lmdb', '{empty}', '{out}/x.lmdb'], ['{empty}', 'holds no images']),
    ('make-lmdb-pair-empty-lq', ['make-lmdb', '--lq', '{empty}', '--gt', '{empty}', '{out}/p'],
     ['{empty}', 'holds no images']),
    ('score-empty-folder', ['score', '{empty}', '--metrics', 'niqe'], ['{empty}', 'holds no images']),
    ('super-resolve-gt-empty', ['super-resolve-gt', '{empty}', '{out}/sr', '--detail-sweep', 'usm'],
     ['{empty}', 'holds no images']),
    ('make-enhancer-pairs-empty', ['make-enhancer-pairs', '{empty}', '{out}/pairs'], ['{empty}', 'holds no images']),
    ('refine-empty', ['refine', '{empty}', '{out}/r', '--ornet-opt', '{out}/o.yml', '--ornet-weights', '{out}/o.pth'],
     ['{empty}', 'holds no images']),
    ('refine-negative-tile', ['refine', '{empty}', '{out}/r', '--ornet-opt', 'o.yml', '--ornet-weights', 'o.pth',
                              '--tile', '-16'], ['--tile must be an integer >= 0, got -16']),
    ('refine-negative-tile-pad', ['refine', '{empty}', '{out}/r', '--ornet-opt', 'o.yml', '--ornet-weights', 'o.pth',
                                  '--tile', '64', '--tile-pad', '-8'], ['--tile-pad must be an integer >= 0, got -8']),
    ('refine-cond-not-a-number', ['refine', '{empty}', '{out}/r', '--ornet-opt', 'o.yml', '--ornet-weights', 'o.pth',
                                  '--cond', 'abc'], ["--cond must be numbers in [0,1], got 'abc'"]),
]


@pytest.mark.parametrize('argv, names', [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, argv, names):
    empty, out = tmp_path / 'empty', tmp_path / 'out'
    empty.mkdir()
    out.mkdir()
    (empty / 'notes.txt').write_text('not an image')  # a folder with files, none of them images
    fill = {'empty': str(empty), 'out': str(out)}
    proc = run_cli([arg.format(**fill) for arg in argv], cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert 'Traceback' not in proc.stderr
    for name in names:
        assert name.format(**fill) in proc.stderr, proc.stderr
    assert os.listdir(out) == []  # nothing a rerun would trust
