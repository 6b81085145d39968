"""Failed writes (a full disk, simulated in process): every file a verb writes appears only complete, the verb ends
with one line naming it, and nothing is left that a rerun would trust (no temporary, no half-written file; an
incomplete LMDB stays recognisably incomplete and resumes)."""
import errno
import os

import numpy as np
import pytest
from data_helpers import gtplus, lmdb_items, make_folder, partial_keys, write_rgb

from gtplus_data import atomic_file


class FullDisk:
    """A file that stores half of what it is given, then fails as a full disk does."""

    def __init__(self, path, mode='r', **kwargs):
        self.file = open(path, mode, **kwargs)

    def write(self, data):
        self.file.write(data[:len(data) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def disk_full_under(monkeypatch, folder):
    """Every atomic write under ``folder`` fails with ENOSPC (others, e.g. caches, still work)."""
    def full_open(path, mode='r', **kwargs):
        return (FullDisk if str(path).startswith(str(folder)) else open)(path, mode, **kwargs)
    monkeypatch.setattr(atomic_file, 'open', full_open, raising=False)


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder)
                  for name in names)


@pytest.mark.parametrize('mode, data', [('wb', b'x' * 100), ('w', 'text')])
def test_atomic_write_on_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, mode, data):
    path = tmp_path / 'sub' / 'file.txt'
    path.parent.mkdir()
    path.write_text('old')
    disk_full_under(monkeypatch, tmp_path)
    with pytest.raises(OSError) as caught:
        atomic_file.atomic_write(str(path), data)
    assert str(caught.value) == f'cannot write {path}: No space left on device'
    assert caught.value.errno == errno.ENOSPC
    assert files_under(tmp_path) == ['sub/file.txt'] and path.read_text() == 'old'
    with pytest.raises(ZeroDivisionError):  # not an OS error: propagated unchanged, the temporary still removed
        with atomic_file.atomic_output(str(tmp_path / 'other.bin')):
            1 / 0
    assert files_under(tmp_path) == ['sub/file.txt']


@pytest.mark.parametrize('failing', ['quality_scores.json', 'quality_scores_hist.png'])
def test_score_on_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys, failing):
    data = tmp_path / 'data'
    data.mkdir()
    write_rgb(data / 'a.png', (np.random.RandomState(0).rand(128, 128, 3) * 255).astype(np.uint8))
    out = tmp_path / 'scores'
    disk_full_under(monkeypatch, out / failing)
    code, errors = gtplus(capsys, 'score', data, '--metrics', 'niqe', '--out', out / 'quality_scores.json', '--plot',
                          out / 'quality_scores_hist.png')
    assert code == 2 and errors == [f'gtplus score: error: cannot write {out / failing}: No space left on device']
    # The side file is written first: when only the figure fails, the complete side file stays (a rerun trusts it
    # rightly, and writes the figure).
    assert files_under(out) == ([] if failing == 'quality_scores.json' else ['quality_scores.json'])
    assert files_under(data) == ['a.png']


def test_make_lmdb_on_a_full_disk_is_one_line_and_the_output_stays_resumable(tmp_path, monkeypatch, capsys):
    import lmdb
    folder, _ = make_folder(tmp_path / 'in', num=20)
    out = str(tmp_path / 'out.lmdb')
    real_open, commits = lmdb.open, [0]

    class FullTransaction:
        """A write transaction that fails like LMDB on a full disk, from the third commit on."""

        def __init__(self, txn):
            self.txn = txn

        def put(self, *args, **kwargs):
            if commits[0] >= 2:
                raise lmdb.Error('mdb_txn_commit: No space left on device')
            return self.txn.put(*args, **kwargs)

        def __enter__(self):
            self.txn.__enter__()
            return self

        def __exit__(self, *exc):
            commits[0] += exc[0] is None
            return self.txn.__exit__(*exc)

    class FullEnvironment:
        def __init__(self, env):
            self.env = env

        def begin(self, write=False, **kwargs):
            txn = self.env.begin(write=write, **kwargs)
            return FullTransaction(txn) if write else txn

        def __getattr__(self, name):
            return getattr(self.env, name)

    monkeypatch.setattr(lmdb, 'open', lambda path, **kw: (real_open(path, **kw) if kw.get('readonly') else
                                                          FullEnvironment(real_open(path, **kw))))
    code, errors = gtplus(capsys, 'make-lmdb', folder, out)
    assert code == 2 and errors == [f'gtplus make-lmdb: error: cannot write LMDB {out}: mdb_txn_commit: No space '
                                    'left on device']
    assert files_under(out) == ['data.mdb', 'lock.mdb']  # no meta_info.txt: incomplete, and known to be
    assert 8 <= len(partial_keys(out)) < 20
    monkeypatch.undo()
    assert gtplus(capsys, 'make-lmdb', folder, out)[0] == 0  # the rerun resumes
    assert gtplus(capsys, 'make-lmdb', folder, tmp_path / 'clean.lmdb')[0] == 0
    assert lmdb_items(out) == lmdb_items(tmp_path / 'clean.lmdb')
