"""``gtplus test`` / ``python -m gtplus_models.test``: basicsr's test loop with gtplus's options and fixes.

Same flags as ``basicsr/test.py``. results/ goes under the current directory.
"""
import gtplus_models  # noqa: F401  (applies the compat fixes and registers every gtplus component)
from gtplus_models.train import module_main, run_pipeline


def test_main(args=None):
    """Test from an option file; returns a process exit code."""
    return run_pipeline(args, is_train=False)


# pytest collects test_* functions from files named test_*.py; this module is not a test file.
test_main.__test__ = False

if __name__ == '__main__':
    module_main(is_train=False)
