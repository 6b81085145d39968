"""LMDB faults: truncated and damaged databases are one-line errors (never SIGBUS).

The CLI cases of truncated databases run as subprocesses in tests/test_bad_inputs.py (rows under "LMDB faults and
resume"); here everything runs in process.
"""
import os
import shutil
import struct
import subprocess
import sys

import pytest
from data_helpers import LMDB_PAGE, corrupt_lmdb_root, noise_lmdb, truncate_lmdb

from gtplus_data.image_source import ImageSource
from gtplus_data.lmdb_check import check_lmdb_file
from gtplus_data.lmdb_writer import LmdbWriter

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
