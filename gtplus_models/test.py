"""``gtplus test`` / ``python -m gtplus_models.test``: basicsr's test loop with gtplus's options and fixes.

Same flags as ``basicsr/test.py``. results/ goes under the current directory.
"""
import sys

import gtplus_models  # noqa: F401  (applies the compat fixes and registers every gtplus component)
from gtplus_models.options import OptionsError, add_pipeline_arguments
from gtplus_models.train import run_pipeline


def test_main(args=None):
    """Test from an option file. Returns a process exit code (2 for a bad option file)."""
    import basicsr.test
    try:
        run_pipeline(basicsr.test, args, is_train=False)
    except OptionsError as err:
        sys.stderr.write(f'gtplus test: error: {err}\n')
        return 2
    return 0


# pytest collects test_* functions from files named test_*.py; this module is not a test file.
test_main.__test__ = False


def main():
    import argparse
    parser = add_pipeline_arguments(argparse.ArgumentParser(prog='python -m gtplus_models.test'))
    sys.exit(test_main(parser.parse_args()))


if __name__ == '__main__':
    main()
