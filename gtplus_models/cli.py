"""The ``gtplus`` command. Each module in ``gtplus_models/commands/`` is one subcommand.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; its file name,
with ``_`` turned into ``-``, is the subcommand's name. It parses, calls one tool function and logs where the output
went. Heavy imports belong inside ``run`` so that ``gtplus --help`` stays quick.

A user error (a missing or unreadable file, a bad value, weights that do not match) raised by a tool is printed here
as one line, ``gtplus VERB: error: MESSAGE``, with exit status 2, as argparse does for bad flags. Set
``GTPLUS_TRACEBACK=1`` to see the traceback instead. ``train`` and ``test`` report option-file errors the same way
(:mod:`gtplus_models.train`) and keep tracebacks for failures inside basicsr's loop.
"""
import argparse
import importlib
import os
import sys

from gtplus_models.version import __version__

COMMANDS_PACKAGE = 'gtplus_models.commands'
# What tools raise for bad input: ValueError (ImageReadError, OptionsError), OSError (FileNotFoundError,
# FileExistsError, MissingWeightsError), KeyError (an unknown metric or key) and RuntimeError (a checkpoint that
# does not fit its network).
USER_ERRORS = (ValueError, OSError, KeyError, RuntimeError)


def discover_commands():
    """Map subcommand name -> command module, in name order."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'commands')
    names = sorted(name[:-3] for name in os.listdir(folder) if name.endswith('.py') and not name.startswith('_'))
    return {name.replace('_', '-'): importlib.import_module(f'{COMMANDS_PACKAGE}.{name}') for name in names}


def build_parser():
    parser = argparse.ArgumentParser(
        prog='gtplus', description='gtplus: train BasicSR restoration models beyond their ground truth.')
    parser.add_argument('--version', action='version', version=f'gtplus {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', title='commands')
    for name, module in discover_commands().items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def error_message(err):
    """The one-line text of a user error: a KeyError's message without its repr quotes, and an OSError from the
    system ('[Errno 17] File exists: ...') as 'File exists: PATH'."""
    if isinstance(err, KeyError) and err.args:
        return err.args[0]
    if isinstance(err, OSError) and err.strerror and err.filename:
        target = f' -> {err.filename2}' if err.filename2 else ''
        return f'{err.strerror}: {err.filename}{target}'
    return str(err)


def main(argv=None):
    os.environ.setdefault('HF_HUB_OFFLINE', '1')  # no hub lookups: weights always come from local paths
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in PIPELINE_COMMANDS:
        return args.run(args) or 0  # basicsr's loop: option errors are handled there, training errors keep tracebacks
    show_tool_progress()
    try:
        return args.run(args) or 0
    except USER_ERRORS as err:
        if os.environ.get('GTPLUS_TRACEBACK'):
            raise
        sys.stderr.write(f'gtplus {args.command}: error: {error_message(err)}\n')
        return 2


# train/test initialise basicsr's logger themselves, with their log file; creating it earlier would lose the file.
PIPELINE_COMMANDS = ('train', 'test')


def show_tool_progress():
    """basicsr's root logger only gets a level when given a log file; tools log INFO to the console."""
    import logging

    from basicsr.utils import get_root_logger
    get_root_logger().setLevel(logging.INFO)


if __name__ == '__main__':
    sys.exit(main())
