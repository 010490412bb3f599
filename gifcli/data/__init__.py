"""Datasets (built-in, ImageFolder, tensors files), splits, forget sets and backdoor poisoning."""
from . import imagefolder as _imagefolder  # noqa: F401  (registers imagefolder:DIR)
from . import tensorfile as _tensorfile  # noqa: F401  (registers tensors:FILE)
from .datasets import DATASET_KINDS, Data, DatasetSpec, Split, batches, load_data

__all__ = ["DATASET_KINDS", "Data", "DatasetSpec", "Split", "batches", "load_data"]
