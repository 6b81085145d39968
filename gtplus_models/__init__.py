"""gtplus_models: training procedures (MODEL_REGISTRY), losses (LOSS_REGISTRY), metrics (METRIC_REGISTRY),
checkpoints, the NR-IQA door, the offline tools, the ``gtplus`` command and the quickstart pipelines.

Where things go:
- a new model: ``<name>_model.py`` here, subclassing basicsr's ``SRModel``/``BaseModel`` and registered with
  ``@MODEL_REGISTRY.register()``; a loss: ``losses.py`` or ``<name>_loss.py``; a validation metric:
  ``<name>_metric.py``. Every such file at this level is imported, and so registered, by this file.
- pieces shared by one method's models and tools (e.g. ``enhanced_supervision.py``: c sampling, the default c):
  a plain module here.
- NR-IQA (pyiqa) access: ``quality/`` only (offline weights, the metric adapter, the ensemble).
- an offline engine (writes LMDBs, images, side files or figures): ``tools/<name>.py`` with explicit keyword
  arguments, importable and testable without the command line.
- a ``gtplus`` verb: ``commands/<verb>.py`` (``HELP``, ``add_arguments``, ``run``), a thin front end that parses,
  calls one tool function and says where the output went. ``cli.py`` discovers it by file name.
- a quickstart pipeline: ``quickstart/<name>.py`` plus its YAML templates in ``quickstart/templates/<name>/``;
  register it in ``quickstart/__init__.py`` so ``gtplus quickstart OUT --pipeline <name>`` finds it.

Imports point down: commands -> tools / quickstart -> models -> gtplus_data -> gtplus_arch -> gtplus_compat.
"""
import importlib
import os.path as osp

import gtplus_compat

gtplus_compat.apply_all()

import gtplus_arch  # noqa: E402,F401  (registers the networks the models build)
import gtplus_data  # noqa: E402,F401  (registers the datasets the options name)
from basicsr.utils import scandir  # noqa: E402

from gtplus_models.checkpoints import patch_basicsr_load_network  # noqa: E402
from gtplus_models.version import __version__  # noqa: E402

# Every model, basicsr's own included, reads path.pretrain_network_* through gtplus's checkpoint loading (official
# .pkl layouts, one-line errors naming the key and the file).
patch_basicsr_load_network()

# As basicsr does for its own folders: importing every *_model.py, *_loss.py / losses.py and *_metric.py at this
# level registers its models, losses and metrics.
_REGISTERING_SUFFIXES = ('_model.py', '_loss.py', 'losses.py', '_metric.py')
_registering_modules = [
    importlib.import_module(f'gtplus_models.{osp.splitext(name)[0]}')
    for name in sorted(scandir(osp.dirname(osp.abspath(__file__)))) if name.endswith(_REGISTERING_SUFFIXES)
]

__all__ = ['__version__']
