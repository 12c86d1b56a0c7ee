"""Data: the canonical file formats, the benchmark datasets, their splits and binarisation."""

from .datasets import DATASETS, BinaryImages, cache_dir, load_dataset
from .formats import DataFormatError, read_amat, read_chardata, read_idx, write_amat, write_chardata, write_idx

__all__ = [
    "DATASETS",
    "BinaryImages",
    "DataFormatError",
    "cache_dir",
    "load_dataset",
    "read_amat",
    "read_chardata",
    "read_idx",
    "write_amat",
    "write_chardata",
    "write_idx",
]
