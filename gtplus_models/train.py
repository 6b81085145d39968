"""``gtplus train`` / ``python -m gtplus_models.train``: basicsr's training loop with gtplus's options and fixes.

Same flags as ``basicsr/train.py``. experiments/ and tb_logger/ go under the current directory. ``--auto_resume``
continues exactly where the interrupted run stopped (batches and random states; see
:mod:`gtplus_compat.exact_resume`).
"""
import os
import sys

import gtplus_models  # noqa: F401  (applies the compat fixes and registers every gtplus component)
from gtplus_models.checkpoints import CheckpointError
from gtplus_models.options import OptionsError, add_pipeline_arguments, parse_options


# What building a dataset or a model raises for bad options or data: basicsr's own checks (ValueError, assert), an
# argument the class does not take (TypeError), a missing key (KeyError), unreadable files (OSError) and weights
# that do not fit (RuntimeError). Errors inside the training loop keep their tracebacks.
SETUP_ERRORS = (ValueError, TypeError, KeyError, AssertionError, OSError, RuntimeError)


def setup_step(func, describe):
    """Wrap a basicsr builder so that a setup error becomes an OptionsError saying what was being built.

    Args:
        func (callable): ``build_dataset(dataset_opt)`` or ``build_model(opt)``.
        describe (callable): the builder's argument -> 'datasets.train (PairedImageDataset)'-like text.
    """
    if getattr(func, 'gtplus_setup_step', False):
        return func

    def wrapper(opt, *args, **kwargs):
        try:
            return func(opt, *args, **kwargs)
        except (OptionsError, CheckpointError):
            raise  # already one line naming the key (and the file)
        except SETUP_ERRORS as err:
            if os.environ.get('GTPLUS_TRACEBACK'):
                raise
            text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            raise OptionsError(f'building {describe(opt)} failed: {type(err).__name__}: {text} '
                               '(GTPLUS_TRACEBACK=1 shows the traceback)') from err
    wrapper.gtplus_setup_step = True
    return wrapper


def _describe_dataset(dataset_opt):
    return f"datasets.{dataset_opt.get('phase', '?')} ({dataset_opt.get('type')} {dataset_opt.get('name', '')!r})"


def _describe_model(opt):
    return f"the model ({opt.get('model_type')}, network_g {(opt.get('network_g') or {}).get('type')})"


def run_pipeline(args, is_train):
    """Run basicsr's ``train_pipeline`` / ``test_pipeline`` with gtplus's safe, checked option parsing.

    Args:
        args (argparse.Namespace | list[str] | None): flags, argv, or None for sys.argv[1:].
        is_train (bool): which pipeline.

    Returns:
        int: a process exit code (2 for a bad option file or a ``path.pretrain_network_*`` file that cannot serve
        its network; the problem goes to stderr as one line, without a traceback).
    """
    import basicsr.test
    import basicsr.train
    pipeline_module = basicsr.train if is_train else basicsr.test
    root_path = os.getcwd()
    pipeline_module.parse_options = lambda _root, is_train=is_train: parse_options(root_path, is_train, args)
    pipeline_module.build_dataset = setup_step(pipeline_module.build_dataset, _describe_dataset)
    pipeline_module.build_model = setup_step(pipeline_module.build_model, _describe_model)
    try:
        if is_train:
            pipeline_module.train_pipeline(root_path)
        else:
            pipeline_module.test_pipeline(root_path)
    except (OptionsError, CheckpointError) as err:
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
