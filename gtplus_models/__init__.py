"""gtplus_models: training procedures (MODEL_REGISTRY), losses (LOSS_REGISTRY), metrics (METRIC_REGISTRY), the
NR-IQA quality adapter, the ``gtplus`` command line and the train/test entry points."""
import gtplus_compat

gtplus_compat.apply_all()

import gtplus_arch  # noqa: E402,F401  (registers the networks the models build)
import gtplus_data  # noqa: E402,F401  (registers the datasets the options name)
from gtplus_models.version import __version__  # noqa: E402

# Every *_model.py, *_loss.py / losses.py and *_metric.py registers into basicsr's registries.
_registering_modules = gtplus_compat.import_registering_modules(__name__, __file__,
                                                                ('_model.py', '_loss.py', 'losses.py', '_metric.py'))

__all__ = ['__version__']
