"""``gtplus train`` / ``python -m gtplus_models.train``: basicsr's training loop with gtplus's options and fixes.

Same flags as ``basicsr/train.py``. experiments/ and tb_logger/ go under the current directory.
"""
import os
import sys

import gtplus_models  # noqa: F401  (applies the compat fixes and registers every gtplus component)
from gtplus_models.options import OptionsError, add_pipeline_arguments, parse_options


def run_pipeline(pipeline_module, args, is_train):
    """Run basicsr's ``train_pipeline`` / ``test_pipeline`` with gtplus's safe, checked option parsing.

    Args:
        pipeline_module (module): ``basicsr.train`` or ``basicsr.test``.
        args (argparse.Namespace | list[str] | None): flags, argv, or None for sys.argv[1:].
        is_train (bool): which pipeline.
    """
    root_path = os.getcwd()
    pipeline_module.parse_options = lambda _root, is_train=is_train: parse_options(root_path, is_train, args)
    if is_train:
        pipeline_module.train_pipeline(root_path)
    else:
        pipeline_module.test_pipeline(root_path)


def train_main(args=None):
    """Train from an option file. Returns a process exit code (2 for a bad option file)."""
    import basicsr.train
    try:
        run_pipeline(basicsr.train, args, is_train=True)
    except OptionsError as err:
        sys.stderr.write(f'gtplus train: error: {err}\n')
        return 2
    return 0


def main():
    import argparse
    parser = add_pipeline_arguments(argparse.ArgumentParser(prog='python -m gtplus_models.train'))
    sys.exit(train_main(parser.parse_args()))


if __name__ == '__main__':
    main()
