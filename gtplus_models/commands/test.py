"""gtplus test -opt X.yml: run basicsr's test loop and write results/ under the current directory."""
from gtplus_models.options import add_pipeline_arguments

HELP = 'Test a model from a BasicSR option file (same flags as basicsr/test.py).'


def add_arguments(parser):
    add_pipeline_arguments(parser)


def run(args):
    from gtplus_models.test import test_main
    return test_main(args)
