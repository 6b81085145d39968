"""Shared pytest setup: network guard (in process and in subprocesses), offline Hugging Face, small helpers."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GUARD_DIR = os.path.join(HERE, 'netguard')

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['HF_DATASETS_OFFLINE'] = '1'
os.environ['TRANSFORMERS_OFFLINE'] = '1'
os.environ['PYTHONPATH'] = os.pathsep.join([GUARD_DIR, REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p])
sys.path.insert(0, GUARD_DIR)
import sitecustomize as _netguard  # noqa: E402  (tests/netguard/sitecustomize.py)

_netguard.install()


def python_exe():
    """The interpreter running the tests (the project venv); subprocesses use it too."""
    return sys.executable


def gtplus_exe():
    """The installed ``gtplus`` console script beside the interpreter."""
    return os.path.join(os.path.dirname(sys.executable), 'gtplus')


def run_cli(args, cwd, timeout=600, check=True):
    """Run ``gtplus ARGS`` in ``cwd``; returns CompletedProcess with text stdout/stderr."""
    proc = subprocess.run([gtplus_exe()] + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'gtplus {args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n'
                             f'stderr:\n{proc.stderr[-4000:]}')
    return proc


@pytest.fixture
def cli():
    return run_cli
