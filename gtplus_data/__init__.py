"""gtplus_data: datasets (DATASET_REGISTRY), image conversion and PNG I/O, the one LMDB writer with its shards and
side files, the embedded sample photos and classical numpy degradations. Imports basicsr, gtplus_compat and
gtplus_arch, never gtplus_models.

Where things go:
- a new dataset: ``<name>_dataset.py`` with ``@DATASET_REGISTRY.register()`` (class name = YAML ``type``); every
  ``*_dataset.py`` here is imported, and so registered, by this file. Build it on
  :class:`gtplus_data.dataset_util.KeyedRootsDataset` to get lazy LMDB opening, key checks, crops and flips.
- HWC numpy <-> NCHW tensor, PNG reading and writing: ``image_util.py`` (the one home; do not convert elsewhere).
- keyed image reading (folder or LMDB): ``image_source.py``; writing LMDBs: ``lmdb_writer.py`` (one writer for
  every tool), ``lmdb_shards.py`` (rank shards and their merge), ``side_file.py`` (per-key JSON beside an LMDB).
"""
import importlib
import os.path as osp

import gtplus_compat

gtplus_compat.apply_all()

from basicsr.utils import scandir  # noqa: E402

# As basicsr/data/__init__.py does for its own folder: importing every *_dataset.py registers its datasets.
_dataset_modules = [
    importlib.import_module(f'gtplus_data.{osp.splitext(name)[0]}')
    for name in sorted(scandir(osp.dirname(osp.abspath(__file__)))) if name.endswith('_dataset.py')
]
