"""``gtplus train`` / ``python -m gtplus_models.train``: basicsr's training loop with gtplus's options and fixes.

Same flags as ``basicsr/train.py``. experiments/ and tb_logger/ go under the current directory. ``--auto_resume``
continues exactly where the interrupted run stopped (batches and random states; see
:mod:`gtplus_compat.exact_resume`).
"""
import os
import sys

import gtplus_models  # noqa: F401  (applies the compat fixes and registers every gtplus component)
from gtplus_models.options import OptionsError, add_pipeline_arguments, parse_options


def run_pipeline(args, is_train):
    """Run basicsr's ``train_pipeline`` / ``test_pipeline`` with gtplus's safe, checked option parsing.

    Args:
        args (argparse.Namespace | list[str] | None): flags, argv, or None for sys.argv[1:].
        is_train (bool): which pipeline.

    Returns:
        int: a process exit code (2 for a bad option file, whose problem goes to stderr without a traceback).
    """
    import basicsr.test
    import basicsr.train
    pipeline_module = basicsr.train if is_train else basicsr.test
    root_path = os.getcwd()
    pipeline_module.parse_options = lambda _root, is_train=is_train: parse_options(root_path, is_train, args)
    try:
        if is_train:
            pipeline_module.train_pipeline(root_path)
        else:
            pipeline_module.test_pipeline(root_path)
    except OptionsError as err:
        sys.stderr.write(f'gtplus {"train" if is_train else "test"}: error: {err}\n')
        return 2
    return 0


def train_main(args=None):
    """Train from an option file; returns a process exit code."""
    return run_pipeline(args, is_train=True)


def module_main(is_train):
    """``python -m gtplus_models.train`` / ``.test``."""
    import argparse
    prog = f'python -m gtplus_models.{"train" if is_train else "test"}'
    parser = add_pipeline_arguments(argparse.ArgumentParser(prog=prog))
    sys.exit(run_pipeline(parser.parse_args(), is_train))


if __name__ == '__main__':
    module_main(is_train=True)
