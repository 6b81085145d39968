"""The one way gtplus writes a file: complete under a temporary name, then renamed, or nothing at all.

A write that fails half-way (a full disk, a kill, an error while rendering a figure) must leave nothing that a rerun
would trust: no half-written file under the final name, and no temporary file beside it. Every file a gtplus tool
writes (side files and meta_info.txt, PNGs, figures, converted weights) goes through :func:`atomic_output`, which
writes ``PATH.<pid>.tmp`` (per process: concurrent first uses of a shared cache never share a temporary), fsyncs
it, and ``os.replace``-s it onto ``PATH``; on any failure the temporary is removed and an OSError names ``PATH``.
An older ``PATH`` stays as it was until a new one is complete.
"""
import os
import os.path as osp
from contextlib import contextmanager


def temporary_path(path):
    """Where :func:`atomic_output` writes ``path`` before renaming it: ``PATH.<pid>.tmp``."""
    return f'{path}.{os.getpid()}.tmp'


@contextmanager
def atomic_output(path, mode='wb'):
    """A file object whose contents become ``path`` only if the block completes.

    Use as ``with atomic_output(path) as f: f.write(data)`` (or hand ``f`` to ``savefig``, ``savemat``...). The
    parent folder is created.

    Args:
        path (str): the final file.
        mode (str): ``'wb'`` or ``'w'`` (text, UTF-8).

    Yields:
        file: the open temporary file.

    Raises:
        OSError: ``cannot write PATH: REASON`` (its ``errno`` kept, e.g. ENOSPC) for any OS error of the write,
            after removing the temporary. Other exceptions of the block propagate unchanged, also after the
            temporary is removed.
    """
    path = str(path)
    tmp = temporary_path(path)
    try:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        with open(tmp, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:  # KeyboardInterrupt too: never leave the temporary behind
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(err, OSError) and not str(err).startswith(f'cannot write {path}'):
            wrapped = OSError(f'cannot write {path}: {err.strerror or err}')
            wrapped.errno = err.errno
            raise wrapped from None
        raise


def atomic_write(path, data):
    """Write ``data`` (bytes, or str as UTF-8 text) to ``path`` atomically (see :func:`atomic_output`).

    Returns:
        str: ``path``.
    """
    with atomic_output(path, 'w' if isinstance(data, str) else 'wb') as f:
        f.write(data)
    return str(path)
