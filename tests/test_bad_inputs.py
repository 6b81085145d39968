"""Bad input across the verbs: exit code 2, one line naming the offending path, key or flag, no traceback, and no
output left behind that a rerun would trust. New verbs add their rows to BAD_INPUTS.

Rows run in process (``gtplus_models.cli.main``), which keeps the table fast; a row marked ``subprocess`` runs the
installed ``gtplus`` instead (a fault that could kill the interpreter, such as a truncated LMDB, must not take
pytest down with it).
"""
import os
import shutil
from collections import namedtuple

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_MSRRESNET, make_paired_pngs, run_cli, sr_train_options, write_yaml
from data_helpers import LMDB_PAGE, corrupt_lmdb_root, noise_lmdb, truncate_lmdb

TINY_ORNET = {'type': 'ORNet', 'width': 4, 'enc_blk_nums': [1, 1], 'middle_blk_num': 1, 'dec_blk_nums': [1, 1]}
TINY_CFMG = {'type': 'CFMG', 'num_sources': 3, 'width': 4, 'num_levels': 2, 'hidden': 8}

Row = namedtuple('Row', 'id argv names setup subprocess', defaults=(None, False))


def save_network(folder, name, network_opt):
    from basicsr.archs import build_network
    torch.manual_seed(0)
    net = build_network(dict(network_opt))
    torch.save({'params': net.state_dict()}, os.path.join(folder, f'{name}.pth'))
    with open(os.path.join(folder, f'{name}.yml'), 'w') as f:
        yaml.safe_dump(dict(network_opt), f)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Files shared by the rows, none of which a row may change: inputs good and bad, weights good and bad."""
    root = tmp_path_factory.mktemp('world')
    paths = {name: str(root / name) for name in ('empty', 'images', 'corrupt')}
    for name in ('empty', 'images', 'corrupt'):
        os.makedirs(paths[name])
    (root / 'empty' / 'notes.txt').write_text('not an image')  # a folder with files, none of them images
    rng = np.random.RandomState(0)
    for i in range(2):
        cv2.imwrite(os.path.join(paths['images'], f'img{i}.png'), rng.randint(0, 256, (24, 24, 3), dtype=np.uint8))
    cv2.imwrite(os.path.join(paths['corrupt'], 'good.png'), rng.randint(0, 256, (24, 24, 3), dtype=np.uint8))
    (root / 'corrupt' / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))
    paths['a_file'] = str(root / 'a_file.txt')
    (root / 'a_file.txt').write_text('an existing regular file')
    paths['garbage_pth'] = str(root / 'garbage.pth')
    (root / 'garbage.pth').write_bytes(rng.bytes(300))
    paths['empty_pth'] = str(root / 'empty.pth')
    (root / 'empty.pth').write_bytes(b'')
    paths['list_pth'] = str(root / 'list.pth')
    torch.save([1, 2, 3], paths['list_pth'])
    paths['tensor_pth'] = str(root / 'tensor.pth')
    torch.save(torch.zeros(3), paths['tensor_pth'])
    save_network(root, 'ornet', TINY_ORNET)
    save_network(root, 'cfmg', TINY_CFMG)
    save_network(root, 'msrresnet', TINY_MSRRESNET)
    for name in ('ornet', 'cfmg', 'msrresnet'):
        paths[f'{name}_yml'], paths[f'{name}_pth'] = str(root / f'{name}.yml'), str(root / f'{name}.pth')
    gt_dir, lq_dir = make_paired_pngs(str(root / 'pairs'), num=2, gt_size=32, scale=4)
    paths.update(gt=gt_dir, lq=lq_dir)
    return paths


def train_yaml(mutate):
    """A setup that writes a tiny SRModel option file changed by ``mutate(opt, world)``; ``{opt}`` in argv."""
    def setup(tmp_path, world):
        opt = sr_train_options(world['gt'], world['lq'], dict(TINY_MSRRESNET), total_iter=2, gt_size=16)
        mutate(opt, world)
        return {'opt': write_yaml(tmp_path / 'bad.yml', opt)}
    return setup


def set_in(path, value):
    """A ``mutate`` that sets ``opt[a][b]... = value`` for ``path`` 'a.b...'."""
    def mutate(opt, world):
        *parents, leaf = path.split('.')
        node = opt
        for key in parents:
            node = node[key]
        node[leaf] = value
    return mutate


def noise_lmdb_setup(cut=None, change=None):
    """A setup: a complete LMDB of noise images ({lmdb}), then data.mdb cut to ``cut`` bytes or ``change(path)``."""
    def setup(tmp_path, world):
        path = noise_lmdb(tmp_path / 'noise.lmdb', num=3)
        if cut is not None:
            truncate_lmdb(path, cut)
        if change is not None:
            change(path)
        return {'lmdb': path}
    return setup


def partial_lmdb(change=None):
    """A setup: make-lmdb's partial output ({partial}, no meta_info) of a copy of the world's images ({inputs}), as a
    kill leaves it, then ``change(inputs, partial)``."""
    def setup(tmp_path, world):
        from gtplus_data.image_source import ImageSource
        from gtplus_data.lmdb_writer import LmdbWriter
        inputs = shutil.copytree(world['images'], str(tmp_path / 'inputs'))
        partial = str(tmp_path / 'partial.lmdb')
        source = ImageSource(inputs)
        with LmdbWriter(partial, fingerprint=source.fingerprint) as writer:
            for key in source.keys:
                writer.put_image(key, source.read(key))
        if change is not None:
            change(inputs, partial)
        return {'inputs': inputs, 'partial': partial}
    return setup


def edit_img1(inputs, partial):
    path = os.path.join(inputs, 'img1.png')
    cv2.imwrite(path, np.full((24, 24, 3), 7, np.uint8))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10 ** 9))  # a later edit, surely


def stale_variant(tmp_path, world):
    """{sr}: a folder where detail_usm.lmdb is complete, but made from another GT (a rerun would skip it)."""
    from gtplus_data.lmdb_writer import write_images
    write_images(str(tmp_path / 'sr' / 'detail_usm.lmdb'), [('other', np.zeros((24, 24, 3), np.uint8))])
    return {'sr': str(tmp_path / 'sr')}


REFINE = ['refine', '{images}', '{out}/r', '--ornet-opt', '{ornet_yml}', '--ornet-weights', '{ornet_pth}']

# Row(id, argv, what stderr must name, setup=None, subprocess=False). Placeholders: the world's paths, {out} (a
# fresh output folder that must stay empty) and what a row's setup(tmp_path, world) returns.
BAD_INPUTS = [
    Row('make-lmdb-empty-folder', ['make-lmdb', '{empty}', '{out}/x.lmdb'], ['{empty}', 'holds no images']),
    Row('make-lmdb-pair-empty-lq', ['make-lmdb', '--lq', '{empty}', '--gt', '{empty}', '{out}/p'],
        ['{empty}', 'holds no images']),
    Row('score-empty-folder', ['score', '{empty}', '--metrics', 'niqe'], ['{empty}', 'holds no images']),
    Row('super-resolve-gt-empty', ['super-resolve-gt', '{empty}', '{out}/sr', '--detail-sweep', 'usm'],
        ['{empty}', 'holds no images']),
    Row('make-enhancer-pairs-empty', ['make-enhancer-pairs', '{empty}', '{out}/pairs'],
        ['{empty}', 'holds no images']),
    Row('refine-empty', ['refine', '{empty}', '{out}/r', '--ornet-opt', '{ornet_yml}', '--ornet-weights',
                         '{ornet_pth}'], ['{empty}', 'holds no images']),
    Row('refine-negative-tile', REFINE + ['--tile', '-16'], ['--tile must be an integer >= 0, got -16']),
    Row('refine-negative-tile-pad', REFINE + ['--tile', '64', '--tile-pad', '-8'],
        ['--tile-pad must be an integer >= 0, got -8']),
    Row('refine-cond-not-a-number', REFINE + ['--cond', 'abc'], ["--cond must be numbers in [0,1], got 'abc'"]),
    # train: option values and their types
    Row('train-total-iter-zero', ['train', '-opt', '{opt}'], ['train.total_iter must be >= 1, got 0'],
        train_yaml(set_in('train.total_iter', 0))),
    Row('train-lr-not-a-number', ['train', '-opt', '{opt}'], ["train.optim_g.lr must be a number, got 'fast'"],
        train_yaml(set_in('train.optim_g.lr', 'fast'))),
    Row('train-missing-dataroot', ['train', '-opt', '{opt}'], ['datasets.train.dataroot_gt', '{out}/nope'],
        train_yaml(lambda opt, w: opt['datasets']['train'].update(dataroot_gt=w['out'] + '/nope'))),
    Row('train-unknown-arch', ['train', '-opt', '{opt}'], ['network_g.type', 'MSRResNett'],
        train_yaml(set_in('network_g.type', 'MSRResNett'))),
    Row('train-batch-size-zero', ['train', '-opt', '{opt}'], ['datasets.train.batch_size_per_gpu must be >= 1'],
        train_yaml(set_in('datasets.train.batch_size_per_gpu', 0))),
    # LMDB faults and resume
    Row('score-truncated-lmdb', ['score', '{lmdb}', '--metrics', 'niqe'], ['{lmdb}/data.mdb is truncated'],
        noise_lmdb_setup(cut=lambda full: full // 2), subprocess=True),
    Row('refine-truncated-lmdb', ['refine', '{lmdb}', '{out}/r', '--ornet-opt', '{ornet_yml}', '--ornet-weights',
                                  '{ornet_pth}'], ['{lmdb}/data.mdb is truncated: 4096 bytes'],
        noise_lmdb_setup(cut=LMDB_PAGE), subprocess=True),
    Row('make-lmdb-truncated-lmdb', ['make-lmdb', '{lmdb}', '{out}/x.lmdb'], ['{lmdb}/data.mdb is truncated'],
        noise_lmdb_setup(cut=lambda full: full - LMDB_PAGE), subprocess=True),
    Row('super-resolve-gt-truncated-lmdb', ['super-resolve-gt', '{lmdb}', '{out}/sr', '--detail-sweep', 'usm'],
        ['{lmdb}/data.mdb is truncated: 0 bytes'], noise_lmdb_setup(cut=0), subprocess=True),
    Row('enhance-gt-truncated-lmdb', ['enhance-gt', '{lmdb}', '{out}/e.lmdb', '--variants', '{images}', '{images}',
                                      '--cfmg-opt', '{cfmg_yml}', '--cfmg-weights', '{cfmg_pth}'],
        ['{lmdb}/data.mdb is truncated'], noise_lmdb_setup(cut=2 * LMDB_PAGE + 100), subprocess=True),
    Row('make-lmdb-resume-truncated-output', ['make-lmdb', '{inputs}', '{partial}'],
        ['{partial}/data.mdb is truncated'],
        partial_lmdb(lambda inputs, partial: truncate_lmdb(partial, 2 * LMDB_PAGE + 100)), subprocess=True),
    Row('make-lmdb-corrupt-lmdb', ['make-lmdb', '{lmdb}', '{out}/x.lmdb'],
        ["cannot read LMDB {lmdb} (key 'k0'): mdb_get: MDB_CORRUPTED"],
        noise_lmdb_setup(change=corrupt_lmdb_root)),
    Row('score-not-an-lmdb', ['score', '{lmdb}', '--metrics', 'niqe'], ['{lmdb}/data.mdb is not an LMDB data file'],
        noise_lmdb_setup(change=lambda path: open(os.path.join(path, 'data.mdb'), 'wb').write(b'text\n' * 2000))),
    Row('make-lmdb-resume-deleted-input', ['make-lmdb', '{inputs}', '{partial}'],
        ['cannot resume {partial}: its inputs changed since it was started (deleted: {inputs}/img0.png)',
         'rerun with --overwrite'], partial_lmdb(lambda inputs, partial: os.remove(os.path.join(inputs, 'img0.png')))),
    Row('make-lmdb-resume-edited-input', ['make-lmdb', '{inputs}', '{partial}'],
        ['{partial}', '(changed: {inputs}/img1.png)', '--overwrite'], partial_lmdb(edit_img1)),
    Row('make-lmdb-resume-other-compress-level', ['make-lmdb', '{inputs}', '{partial}', '--compress-level', '5'],
        ['cannot resume {partial} with --compress-level 5: its partial data was written at level 1',
         'resume with --compress-level 1'], partial_lmdb()),
    Row('make-lmdb-resume-other-encoding', ['make-lmdb', '{inputs}', '{partial}', '--encoding', 'bmp'],
        ["cannot resume {partial} with encoding 'bmp': its partial data is 'png'"], partial_lmdb()),
    Row('super-resolve-gt-complete-variant-of-another-gt',
        ['super-resolve-gt', '{images}', '{sr}', '--detail-sweep', 'usm', 'wiener'],
        ['{sr}/detail_usm.lmdb is complete but was not made from this GT', '--overwrite'], stale_variant),
]


def fill(argv, values):
    return [arg.format(**values) for arg in argv]


@pytest.mark.parametrize('row', BAD_INPUTS, ids=[row.id for row in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(row, world, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    values = dict(world, out=str(out))
    world_before = {name: os.path.getmtime(path) for name, path in world.items()}
    if row.setup is not None:
        values.update(row.setup(tmp_path, values))
    monkeypatch.chdir(tmp_path)  # experiments/ of train rows go here, not into the checkout
    argv = fill(row.argv, values)
    if row.subprocess:
        proc = run_cli(argv, cwd=tmp_path, check=False)
        code, stderr = proc.returncode, proc.stderr
    else:
        from gtplus_models.cli import main
        code = main(argv)
        stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert 'Traceback' not in stderr
    for name in row.names:
        assert name.format(**values) in stderr, stderr
    assert os.listdir(out) == []  # nothing a rerun would trust
    assert not os.path.exists(tmp_path / 'experiments' / 'toy_sr' / 'models') or \
        os.listdir(tmp_path / 'experiments' / 'toy_sr' / 'models') == []
    assert {name: os.path.getmtime(path) for name, path in world.items()} == world_before  # inputs untouched


def test_the_table_covers_every_verb():
    from gtplus_models.cli import discover_commands
    verbs = {row.argv[0] for row in BAD_INPUTS}
    assert set(discover_commands()) - {'sample-data', 'quickstart'} <= verbs, set(discover_commands()) - verbs
    assert len(BAD_INPUTS) >= 40
    assert len({row.id for row in BAD_INPUTS}) == len(BAD_INPUTS)
