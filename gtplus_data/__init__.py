"""gtplus_data: datasets (DATASET_REGISTRY), the LMDB writer and reader helpers, the embedded sample photos and
classical degradations. Imports basicsr, never gtplus_models."""
import gtplus_compat

gtplus_compat.apply_all()

# Every *_dataset.py registers its datasets, as basicsr.data does for its own folder.
_dataset_modules = gtplus_compat.import_registering_modules(__name__, __file__, ('_dataset.py', ))
