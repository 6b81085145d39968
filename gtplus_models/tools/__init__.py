"""The engines behind the ``gtplus`` verbs: explicit keyword arguments in, files out, importable and testable.

One module per job; a tool never parses command lines (that is ``gtplus_models/commands``) and never trains
(that is the models, driven by ``gtplus train``):

- ``super_resolve.py``: GT-size SR and detail variants of a GT set through an enhancer (``super-resolve-gt``);
- ``enhancer_pairs.py``: (degraded, GT) pairs from a user's own GT set, to train an enhancer (``make-enhancer-pairs``);
- ``enhance_gt.py``: the enhanced GT Î(c) of a dataset from a trained CFMG (``gtplus enhance-gt``);
- ``refine.py``: any restorer + ORNet at chosen c over a folder or LMDB (``gtplus refine``);
- ``tiling.py``: tiled inference shared by the tools above, and the one rule for the input sizes a network accepts
  (windowed restorers such as SwinIR are padded to their window and cropped back);
- ``scoring.py``: NR-IQA scores as a side file plus histogram (``gtplus score``);
- ``synthesize.py``: (LQ, GT) pair LMDBs from HR images through a degradation synthesizer, with a provenance side
  file (``gtplus synthesize``);
- ``degradation_report.py``: colour shift (CIEDE2000) and diversity of pair sets, side by side
  (``gtplus degradation-report``);
- ``figures.py``: labelled strips, grids, masks and previews that tools write beside their outputs.

A new tool goes here as ``<name>.py``; it writes data
through :mod:`gtplus_data.lmdb_writer` / :mod:`gtplus_data.lmdb_shards`, images through
:mod:`gtplus_data.image_util`, and scores through :mod:`gtplus_models.quality`.
"""
