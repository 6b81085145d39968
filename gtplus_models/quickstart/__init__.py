"""The quickstart pipelines: each method end to end on the embedded photos, on a CPU, as an honest experiment.

One module per pipeline (``enhanced_supervision.py``, ``undertrained.py``, ``diffusion.py`` and ``iqpir.py``), each
defining ``NAME`` (the ``--pipeline`` value), ``HELP`` (one line) and
``run(out, size, iters, cond, photos, holdout) -> report``; its
YAML templates live in ``templates/<module name>/``. ``common.py`` holds the shared stage machinery (photos, LMDBs,
templates, training stages, timings) and ``report.py`` the shared report (metrics, verdicts, report.json/.md).

Every pipeline builds an imperfect world from the pristine photos, trains its method and a plain control at the
same budget, tests both on held-out photos against the pristine photo and says plainly when the method does not
help. To add one: write ``quickstart/<name>.py`` and its templates, and list the module in ``PIPELINE_MODULES``.
"""
import importlib
import os.path as osp

PIPELINE_MODULES = ('enhanced_supervision', 'undertrained', 'diffusion', 'iqpir')
DEFAULT_PIPELINE = 'enhanced-supervision'
ALL = 'all'


def pipelines():
    """{NAME: module} of every quickstart pipeline, in the order ``--pipeline all`` runs them."""
    modules = [importlib.import_module(f'gtplus_models.quickstart.{name}') for name in PIPELINE_MODULES]
    return {module.NAME: module for module in modules}


def run_quickstart(out, pipeline=DEFAULT_PIPELINE, **kwargs):
    """Run one pipeline into ``out``, or every pipeline into ``out/<NAME>/`` with ``pipeline='all'``.

    Args:
        out (str): output folder.
        pipeline (str): a pipeline NAME or 'all'.
        **kwargs: ``size``, ``iters``, ``cond``, ``photos``, ``holdout`` (see each pipeline's ``run``).

    Returns:
        dict: {NAME: report} of the pipelines run.
    """
    available = pipelines()
    iters = kwargs.get('iters')
    if iters is not None and (not isinstance(iters, int) or iters < 1):
        raise ValueError(f'--iters must be an integer >= 1, got {iters}')  # 0 once trained nothing and reported
    if pipeline != ALL and pipeline not in available:
        raise ValueError(f"unknown quickstart pipeline '{pipeline}'; choose from {', '.join(available)} or all")
    if pipeline == ALL:
        return {name: module.run(osp.join(out, name), **kwargs) for name, module in available.items()}
    return {pipeline: available[pipeline].run(out, **kwargs)}
