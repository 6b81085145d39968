"""gtplus make-lmdb: single and paired folders, bad inputs (exit 2, named paths, nothing written), shards, SIGKILL."""
import os
import signal
import subprocess
import sys

import cv2
import pytest
from data_helpers import lmdb_items, make_folder, random_rgb, read_text, write_bad_files, write_rgb

from gtplus_models.cli import main


def gtplus(capsys, *args):
    """Run ``gtplus ARGS`` in process; returns (exit code, stderr)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_folder_to_lmdb_readable_by_basicsr(tmp_path, capsys):
    from basicsr.utils import FileClient, imfrombytes
    folder, imgs = make_folder(tmp_path / 'in', num=3)
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'out.lmdb', '--compress-level', 3)[0] == 0
    assert read_text(tmp_path / 'out.lmdb' / 'meta_info.txt') == ''.join(f'{k}.png (12,16,3) 3\n' for k in sorted(imgs))
    client = FileClient('lmdb', db_paths=[str(tmp_path / 'out.lmdb')], client_keys=['gt'])
    assert (imfrombytes(client.get('001', 'gt'), float32=False)[:, :, ::-1] == imgs['001']).all()
    client.client._client['gt'].close()


def test_bad_images_are_all_named_and_nothing_is_written(tmp_path, capsys):
    folder, _ = make_folder(tmp_path / 'in', num=2)
    paths = write_bad_files(folder)
    paths['dotted'] = write_rgb(os.path.join(folder, 'v1.2.png'), random_rgb(0))  # basicsr would cut it at '.'
    code, err = gtplus(capsys, 'make-lmdb', folder, tmp_path / 'out.lmdb')
    assert code == 2 and '5 bad image(s)' in err and "'v1.2' must be non-empty ASCII" in err
    for path in paths.values():
        assert path in err
    assert 'empty image file' in err and 'Traceback' not in err
    assert not os.path.exists(tmp_path / 'out.lmdb')


def test_odd_images_are_stored_as_8bit_rgb(tmp_path, capsys):
    folder = tmp_path / 'in'
    folder.mkdir()
    cv2.imwrite(str(folder / 'gray.png'), random_rgb(1)[:, :, 0])
    cv2.imwrite(str(folder / 'rgba.png'), cv2.merge([*cv2.split(random_rgb(2)), random_rgb(3)[:, :, 0]]))
    write_rgb(folder / 'deep.png', random_rgb(4).astype('uint16') * 257)
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'out.lmdb')[0] == 0
    assert read_text(tmp_path / 'out.lmdb' / 'meta_info.txt').split('\n')[:3] == [
        'deep.png (12,16,3) 1', 'gray.png (12,16,3) 1', 'rgba.png (12,16,3) 1']
    deep = cv2.imdecode(__import__('numpy').frombuffer(lmdb_items(tmp_path / 'out.lmdb')['deep'], 'uint8'), -1)
    assert deep.dtype.name == 'uint8' and (deep[:, :, ::-1] == random_rgb(4)).all()  # 16-bit -> exact 8-bit


def test_missing_input_and_existing_output_exit_2_with_one_line(tmp_path, capsys):
    code, err = gtplus(capsys, 'make-lmdb', tmp_path / 'nowhere', tmp_path / 'out.lmdb')
    assert code == 2 and err.strip().count('\n') == 0 and 'image source not found' in err and 'nowhere' in err
    folder, _ = make_folder(tmp_path / 'in', num=1)
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'out.lmdb')[0] == 0
    code, err = gtplus(capsys, 'make-lmdb', folder, tmp_path / 'out.lmdb')
    assert code == 2 and err.strip().count('\n') == 0 and 'already exists and is complete' in err
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'out.lmdb', '--overwrite')[0] == 0


def test_installed_script_reports_errors_without_traceback(tmp_path, cli):
    proc = cli(['make-lmdb', tmp_path / 'nowhere', tmp_path / 'out.lmdb'], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f'gtplus make-lmdb: error: image source not found: {tmp_path / "nowhere"}'


def test_paired_mode_writes_lq_and_gt(tmp_path, capsys):
    gt, _ = make_folder(tmp_path / 'GT', num=3, height=16, width=24)
    lq, _ = make_folder(tmp_path / 'LQ', num=3, height=8, width=12, seed=50)
    assert gtplus(capsys, 'make-lmdb', '--lq', lq, '--gt', gt, '--scale', 2, tmp_path / 'pair')[0] == 0
    assert read_text(tmp_path / 'pair_gt.lmdb' / 'meta_info.txt').startswith('000.png (16,24,3) 1\n')
    assert read_text(tmp_path / 'pair_lq.lmdb' / 'meta_info.txt').startswith('000.png (8,12,3) 1\n')
    from basicsr.data.paired_image_dataset import PairedImageDataset  # basicsr's own reader, lmdb backend
    dataset = PairedImageDataset({'phase': 'val', 'scale': 2, 'dataroot_gt': str(tmp_path / 'pair_gt.lmdb'),
                                  'dataroot_lq': str(tmp_path / 'pair_lq.lmdb'), 'io_backend': {'type': 'lmdb'},
                                  'filename_tmpl': '{}'})
    item = dataset[2]
    assert item['gt'].shape == (3, 16, 24) and item['lq'].shape == (3, 8, 12) and item['gt_path'] == '002'
    for env in dataset.file_client.client._client.values():
        env.close()


def test_paired_shards_merge_to_the_single_run(tmp_path, capsys):
    gt, _ = make_folder(tmp_path / 'GT', num=3, height=8, width=8)
    lq, _ = make_folder(tmp_path / 'LQ', num=3, height=4, width=4, seed=50)
    assert gtplus(capsys, 'make-lmdb', '--lq', lq, '--gt', gt, '--scale', 2, tmp_path / 'one')[0] == 0
    for rank in (0, 1):
        assert gtplus(capsys, 'make-lmdb', '--lq', lq, '--gt', gt, '--scale', 2, tmp_path / 'two', '--rank', rank,
                      '--world-size', 2)[0] == 0
    assert gtplus(capsys, 'make-lmdb', '--merge', tmp_path / 'two_lq.lmdb', tmp_path / 'two_gt.lmdb')[0] == 0
    for side in ('lq', 'gt'):
        assert lmdb_items(tmp_path / f'two_{side}.lmdb') == lmdb_items(tmp_path / f'one_{side}.lmdb')


@pytest.mark.parametrize('num_gt, lq_extra, lq_extra_size, expected', [
    (14, 'lonely', (4, 4), ['1 key(s) only in LQ {lq}: lonely',
                            '12 key(s) only in GT {gt}: 002, 003, 004, 005, 006, 007, 008, 009, 010, 011 (+2 more)']),
    (2, '001', (4, 5), ['GT size is not 2 x LQ size for 1 key(s)', '001 (LQ 4x5, GT 8x8)']),
], ids=['unmatched-keys', 'unmatched-sizes'])
def test_paired_mismatch_is_named_and_nothing_written(tmp_path, capsys, num_gt, lq_extra, lq_extra_size, expected):
    gt, _ = make_folder(tmp_path / 'GT', num=num_gt, height=8, width=8)
    lq, _ = make_folder(tmp_path / 'LQ', num=2, height=4, width=4)
    write_rgb(tmp_path / 'LQ' / f'{lq_extra}.png', random_rgb(0, *lq_extra_size))
    code, err = gtplus(capsys, 'make-lmdb', '--lq', lq, '--gt', gt, '--scale', 2, tmp_path / 'pair')
    assert code == 2
    for message in expected:
        assert message.format(lq=lq, gt=gt) in err
    assert not os.path.exists(tmp_path / 'pair_lq.lmdb') and not os.path.exists(tmp_path / 'pair_gt.lmdb')


def test_cli_shards_and_merge_equal_single_run(tmp_path, capsys):
    folder, _ = make_folder(tmp_path / 'in', num=5)
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'single.lmdb')[0] == 0
    out = tmp_path / 'sharded.lmdb'
    for rank in (1, 0):
        assert gtplus(capsys, 'make-lmdb', folder, out, '--rank', rank, '--world-size', 2)[0] == 0
    assert gtplus(capsys, 'make-lmdb', folder, out, '--rank', 0, '--world-size', 2)[0] == 0  # done: a no-op
    assert gtplus(capsys, 'make-lmdb', '--merge', out)[0] == 0
    assert gtplus(capsys, 'make-lmdb', '--merge', out)[0] == 0  # idempotent
    assert lmdb_items(out) == lmdb_items(tmp_path / 'single.lmdb')
    assert read_text(out / 'meta_info.txt') == read_text(tmp_path / 'single.lmdb' / 'meta_info.txt')
    code, err = gtplus(capsys, 'make-lmdb', folder, out, '--rank', 1, '--world-size', 2)
    assert code == 2 and 'complete' in err


KILLABLE = r'''
import os, sys, time
from gtplus_data import lmdb_writer
commit = lmdb_writer.LmdbWriter.commit
def slow_commit(self):
    pending = len(self._pending)
    commit(self)
    if pending:
        print('committed', len(self._done), flush=True)
        time.sleep(0.2)  # give the test time to kill us between commits
lmdb_writer.LmdbWriter.commit = slow_commit
from gtplus_models.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_sigkill_midway_then_rerun_equals_uninterrupted_run(tmp_path, capsys):
    folder, _ = make_folder(tmp_path / 'in', num=160, height=6, width=6)
    out = tmp_path / 'out.lmdb'
    proc = subprocess.Popen([sys.executable, '-c', KILLABLE, 'make-lmdb', folder, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    committed = 0
    while committed < 24:
        line = proc.stdout.readline()
        assert line, 'make-lmdb ended before it could be killed'
        committed = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(out / 'meta_info.txt')  # an interrupted run never looks complete
    assert 24 <= len(lmdb_items(out)) < 160  # committed keys survived the kill
    assert gtplus(capsys, 'make-lmdb', folder, out)[0] == 0
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'clean.lmdb')[0] == 0
    assert lmdb_items(out) == lmdb_items(tmp_path / 'clean.lmdb')
    assert read_text(out / 'meta_info.txt') == read_text(tmp_path / 'clean.lmdb' / 'meta_info.txt')


def test_usage_errors(tmp_path, capsys):
    assert gtplus(capsys, 'make-lmdb', '--lq', tmp_path, tmp_path / 'x')[1].endswith(
        'paired mode needs --lq LQ_DIR --gt GT_DIR and one OUT_PREFIX\n')
    with pytest.raises(SystemExit):
        main(['make-lmdb', str(tmp_path), 'out.lmdb', '--compress-level', '12'])
