"""LMDB faults and resumes: truncated and damaged databases are one-line errors (never SIGBUS), a partial LMDB is
resumed only as it was started and only from unchanged inputs, and super-resolve-gt resumes per variant.

The CLI cases of truncated databases run as subprocesses in tests/test_bad_inputs.py (rows under "LMDB faults and
resume"); here everything runs in process.
"""
import logging
import os
import shutil
import struct
import subprocess
import sys

import pytest
import yaml
from data_helpers import (LMDB_PAGE, corrupt_lmdb_root, gtplus, lmdb_items, make_folder, noise_lmdb, partial_keys,
                          random_rgb, read_text, truncate_lmdb, write_rgb)

from gtplus_data.image_source import ImageSource, close_lmdb_readonly
from gtplus_data.lmdb_check import check_lmdb_file
from gtplus_data.lmdb_writer import LmdbWriter
from gtplus_models.cli import main

PAGE = LMDB_PAGE
TRUNCATIONS = {'empty': 0, 'inside the first meta page': 100, 'one page': PAGE, 'half a page past the metas':
               2 * PAGE + PAGE // 2, 'half': lambda full: full // 2 // PAGE * PAGE, 'all but one page':
               lambda full: full - PAGE, 'all but one byte': lambda full: full - 1}


@pytest.fixture(scope='module')
def complete_lmdb(tmp_path_factory):
    return noise_lmdb(tmp_path_factory.mktemp('faults') / 'good.lmdb')


def copy_of(complete_lmdb, tmp_path, name='copy.lmdb'):
    return shutil.copytree(complete_lmdb, str(tmp_path / name))


def test_raw_lmdb_dies_on_a_truncated_file_and_the_check_refuses_it_first(complete_lmdb, tmp_path):
    """Why the check exists: py-lmdb opens a file cut after its meta pages and dies with SIGBUS on the first read."""
    data_file = truncate_lmdb(copy_of(complete_lmdb, tmp_path), lambda full: full // 2)
    probe = ('import lmdb, sys\nenv = lmdb.open(sys.argv[1], readonly=True, lock=False)\nenv.info()\n'
             'with env.begin() as txn:\n    [bytes(v) for _, v in txn.cursor()]\n')
    proc = subprocess.run([sys.executable, '-c', probe, os.path.dirname(data_file)], capture_output=True)
    assert proc.returncode != 0  # -SIGBUS with py-lmdb 1.x-3.x: no Python handler can catch it
    with pytest.raises(ValueError, match='is truncated'):
        check_lmdb_file(os.path.dirname(data_file))


@pytest.mark.parametrize('where', TRUNCATIONS)
def test_truncated_data_mdb_is_a_clear_error_from_the_check_the_source_and_the_writer(complete_lmdb, tmp_path,
                                                                                       where):
    path = copy_of(complete_lmdb, tmp_path)
    data_file = truncate_lmdb(path, TRUNCATIONS[where])
    size = os.path.getsize(data_file)
    message = f'{data_file} is truncated: {size} bytes, '
    for fail in (lambda: check_lmdb_file(path), lambda: check_lmdb_file(data_file), lambda: ImageSource(path)):
        with pytest.raises(ValueError) as caught:
            fail()
        assert str(caught.value).startswith(message) and '--overwrite' in str(caught.value)
        assert '\n' not in str(caught.value)
    os.remove(os.path.join(path, 'meta_info.txt'))  # now a partial output that a rerun would resume
    with pytest.raises(ValueError, match='is truncated'):
        LmdbWriter(path)


def test_complete_files_pass_and_the_needed_size_is_reported(complete_lmdb, tmp_path):
    needed = check_lmdb_file(complete_lmdb)
    assert needed == os.path.getsize(os.path.join(complete_lmdb, 'data.mdb'))
    import lmdb
    lmdb.open(str(tmp_path / 'new.lmdb')).close()
    assert check_lmdb_file(str(tmp_path / 'new.lmdb')) == 2 * PAGE  # a new environment: its two meta pages
    empty = str(tmp_path / 'empty.lmdb')
    with LmdbWriter(empty) as writer:
        assert writer.finalize() == 0
    assert check_lmdb_file(empty) <= os.path.getsize(os.path.join(empty, 'data.mdb'))
    with pytest.raises(FileNotFoundError, match='LMDB data file not found'):
        check_lmdb_file(str(tmp_path / 'nothing.lmdb'))


def test_pages_freed_by_the_last_transaction_may_be_missing_from_the_end(complete_lmdb, tmp_path):
    """LMDB does not write pages its last transaction allocated and freed again: a file may end before the meta's
    last page. Only a page that a tree references past the end is a truncation."""
    path = copy_of(complete_lmdb, tmp_path)
    data_file = os.path.join(path, 'data.mdb')
    with open(data_file, 'r+b') as f:
        for meta in (0, PAGE):
            f.seek(meta + 16 + 120)
            last_pg, = struct.unpack('<Q', f.read(8))
            f.seek(meta + 16 + 120)
            f.write(struct.pack('<Q', last_pg + 3))
    assert check_lmdb_file(path) <= os.path.getsize(data_file)
    source = ImageSource(path)
    assert [source.read(key).shape for key in source.keys] == [(40, 40, 3)] * 6


def test_other_files_and_damaged_pages_are_one_line_value_errors(complete_lmdb, tmp_path):
    not_lmdb = str(tmp_path / 'notes.lmdb')
    os.makedirs(not_lmdb)
    with open(os.path.join(not_lmdb, 'data.mdb'), 'wb') as f:
        f.write(b'not an LMDB, just text\n' * 500)
    with pytest.raises(ValueError, match='data.mdb is not an LMDB data file'):
        check_lmdb_file(not_lmdb)
    path = copy_of(complete_lmdb, tmp_path)
    corrupt_lmdb_root(path)
    source = ImageSource(path)  # the file is whole: only reading finds the damage
    with pytest.raises(ValueError) as caught:
        source.read('k1')
    assert str(caught.value).startswith(f"cannot read LMDB {path} (key 'k1'): mdb_get: MDB_CORRUPTED")
    with pytest.raises(ValueError, match='MDB_CORRUPTED'):
        with source.pixel_view('k1'):
            pass


# make-lmdb resumed after its inputs changed, or with other settings

def interrupt_after(monkeypatch, puts):
    """Make LmdbWriter raise KeyboardInterrupt (a kill) after ``puts`` puts; returns the undo function."""
    original, count = LmdbWriter.put_bytes, [0]

    def put_bytes(self, key, data, shape=None):
        if count[0] == puts:
            raise KeyboardInterrupt
        count[0] += 1
        original(self, key, data, shape)

    monkeypatch.setattr(LmdbWriter, 'put_bytes', put_bytes)
    return monkeypatch.undo


def killed_make_lmdb(monkeypatch, folder, out, *args, puts=3):
    undo = interrupt_after(monkeypatch, puts)
    with pytest.raises(KeyboardInterrupt):
        main(['make-lmdb', str(folder), str(out), *map(str, args)])
    undo()
    assert not os.path.exists(os.path.join(out, 'meta_info.txt'))
    assert len(partial_keys(out)) == puts  # committed on the way out (close commits what is pending)


def test_resume_after_an_input_was_deleted_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    folder, _ = make_folder(tmp_path / 'in', num=6)
    out = str(tmp_path / 'out.lmdb')
    killed_make_lmdb(monkeypatch, folder, out)
    os.remove(os.path.join(folder, '001.png'))  # already in the partial output
    code, errors = gtplus(capsys, 'make-lmdb', folder, out)
    assert code == 2 and len(errors) == 1, errors
    assert f'cannot resume {out}: its inputs changed since it was started (deleted: ' \
           f'{os.path.join(folder, "001.png")}); rerun with --overwrite' in errors[0]
    assert not os.path.exists(os.path.join(out, 'meta_info.txt'))  # the refusal wrote nothing
    assert gtplus(capsys, 'make-lmdb', folder, out, '--overwrite')[0] == 0
    assert ImageSource(out).keys == ['000', '002', '003', '004', '005']


def test_resume_after_an_input_was_edited_is_refused_but_later_edits_are_fine(tmp_path, monkeypatch, capsys):
    folder, _ = make_folder(tmp_path / 'in', num=6)
    out = str(tmp_path / 'out.lmdb')
    killed_make_lmdb(monkeypatch, folder, out)
    later = write_rgb(os.path.join(folder, '004.png'), random_rgb(40))  # not written yet: nothing to refuse
    os.utime(later, ns=(os.stat(later).st_atime_ns, os.stat(later).st_mtime_ns + 10 ** 9))
    assert gtplus(capsys, 'make-lmdb', folder, out)[0] == 0
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'clean.lmdb')[0] == 0
    assert lmdb_items(out) == lmdb_items(tmp_path / 'clean.lmdb')

    out = str(tmp_path / 'again.lmdb')
    killed_make_lmdb(monkeypatch, folder, out)
    edited = write_rgb(os.path.join(folder, '002.png'), random_rgb(41))  # in the partial output already
    os.utime(edited, ns=(os.stat(edited).st_atime_ns, os.stat(edited).st_mtime_ns + 10 ** 9))
    code, errors = gtplus(capsys, 'make-lmdb', folder, out)
    assert code == 2 and f'(changed: {edited}); rerun with --overwrite' in errors[0], errors


def test_resume_with_another_compress_level_is_refused(tmp_path, monkeypatch, capsys):
    folder, _ = make_folder(tmp_path / 'in', num=6)
    out = str(tmp_path / 'out.lmdb')
    killed_make_lmdb(monkeypatch, folder, out, '--compress-level', 1)
    code, errors = gtplus(capsys, 'make-lmdb', folder, out, '--compress-level', 6)
    assert code == 2 and f'cannot resume {out} with --compress-level 6: its partial data was written at level 1 ' \
        'and a database never mixes compress levels (resume with --compress-level 1, or pass --overwrite' in errors[0]
    assert gtplus(capsys, 'make-lmdb', folder, out, '--compress-level', 1)[0] == 0  # as started: fine
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'clean.lmdb')[0] == 0
    assert lmdb_items(out) == lmdb_items(tmp_path / 'clean.lmdb')  # the record is dropped once complete
    assert read_text(os.path.join(out, 'meta_info.txt')) == read_text(tmp_path / 'clean.lmdb' / 'meta_info.txt')


# super-resolve-gt: a rerun skips the complete variants and resumes the one that was killed

def super_resolve(tmp_path, gt, out, *args):
    enhancer = tmp_path / 'enhancer.yml'
    enhancer.write_text(yaml.safe_dump({'type': 'GTPlusDetailEnhancer', 'mode': 'usm'}))
    return main(['super-resolve-gt', str(gt), str(out), '--enhancer-opt', str(enhancer), '--scales', '2,3',
                 '--preview', '2', *args])


def test_super_resolve_gt_killed_during_its_second_scale_resumes_there(tmp_path, monkeypatch, caplog):
    gt, _ = make_folder(tmp_path / 'gt', num=4, height=12, width=12)
    assert super_resolve(tmp_path, gt, tmp_path / 'clean') == 0
    undo = interrupt_after(monkeypatch, 4 + 2)  # all of x2, then two images of x3
    with pytest.raises(KeyboardInterrupt):
        super_resolve(tmp_path, gt, tmp_path / 'killed')
    undo()
    assert os.path.isfile(tmp_path / 'killed' / 'sr_x2.lmdb' / 'meta_info.txt')
    assert not os.path.exists(tmp_path / 'killed' / 'sr_x3.lmdb' / 'meta_info.txt')
    logger = logging.getLogger('basicsr')
    logger.addHandler(caplog.handler)
    try:
        assert super_resolve(tmp_path, gt, tmp_path / 'killed') == 0
    finally:
        logger.removeHandler(caplog.handler)
    assert f"sr_x2: already complete, skipped: {tmp_path / 'killed' / 'sr_x2.lmdb'}" in caplog.text
    for name in ('sr_x2.lmdb', 'sr_x3.lmdb'):
        for run in ('killed', 'clean'):  # the preview's readers keep them open
            close_lmdb_readonly(str(tmp_path / run / name))
        assert lmdb_items(tmp_path / 'killed' / name) == lmdb_items(tmp_path / 'clean' / name)
        assert read_text(tmp_path / 'killed' / name / 'meta_info.txt') == \
            read_text(tmp_path / 'clean' / name / 'meta_info.txt')
    with open(tmp_path / 'killed' / 'preview.png', 'rb') as a, open(tmp_path / 'clean' / 'preview.png', 'rb') as b:
        assert a.read() == b.read()


def test_super_resolve_gt_refuses_a_complete_rerun_and_a_variant_of_another_gt(tmp_path, capsys):
    gt, _ = make_folder(tmp_path / 'gt', num=3, height=12, width=12)
    out = tmp_path / 'out'
    assert super_resolve(tmp_path, gt, out) == 0
    capsys.readouterr()
    assert super_resolve(tmp_path, gt, out) == 2
    assert f"already exists and is complete: {out / 'sr_x2.lmdb'}, {out / 'sr_x3.lmdb'} (pass --overwrite" in \
        capsys.readouterr().err
    shutil.rmtree(out / 'sr_x3.lmdb')
    os.remove(os.path.join(gt, '000.png'))  # sr_x2 was made from a GT with one more image
    assert super_resolve(tmp_path, gt, out) == 2
    assert f"{out / 'sr_x2.lmdb'} is complete but was not made from this GT" in capsys.readouterr().err


def test_the_up_front_check_leaves_lmdbs_for_basicsrs_own_datasets_to_open(tmp_path):
    """train checks every LMDB root before basicsr builds the datasets; basicsr's PairedImageDataset then opens the
    same paths with its FileClient, and py-lmdb refuses a path already open in the process ('is already open in
    this process'), so the check must not keep what it opened. An environment that was open before stays open."""
    from basicsr.data.paired_image_dataset import PairedImageDataset

    from gtplus_data.image_source import is_lmdb_open, open_lmdb_readonly
    from gtplus_models.dataset_checks import check_datasets
    from gtplus_models.options import walk_datasets
    lq, gt = noise_lmdb(tmp_path / 'pair_lq.lmdb', size=10), noise_lmdb(tmp_path / 'pair_gt.lmdb', size=40)
    dataset = {'name': 'val', 'type': 'PairedImageDataset', 'dataroot_lq': lq, 'dataroot_gt': gt,
               'io_backend': {'type': 'lmdb'}, 'phase': 'val', 'scale': 4}
    check_datasets({'scale': 4, 'datasets': {'val': dict(dataset)}}, walk_datasets)
    assert not is_lmdb_open(lq) and not is_lmdb_open(gt)
    sample = PairedImageDataset(dict(dataset))[0]
    assert tuple(sample['lq'].shape) == (3, 10, 10) and tuple(sample['gt'].shape) == (3, 40, 40)
    other = noise_lmdb(tmp_path / 'other.lmdb')
    open_lmdb_readonly(other)
    check_datasets({'scale': 1, 'datasets': {'train': {'type': 'GTPlusSingleHRDataset', 'dataroot_gt': other,
                                                         'io_backend': {'type': 'lmdb'}, 'phase': 'train'}}},
                   walk_datasets)
    assert is_lmdb_open(other)
    close_lmdb_readonly(other)
