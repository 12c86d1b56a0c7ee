"""data/: the helpers the tests share to write a dataset in its exact format (``write_mnist``), and the cache
kept out of the user's. The loaders are tested in test_formats.py (data/formats.py) and test_datasets.py
(data/datasets.py)."""

import numpy as np
import pytest

from armgrad.data import write_idx


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))


def write_mnist(folder, n_train=120, n_test=30, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    train = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", train)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_train, dtype=np.uint8))
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", test)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_test, dtype=np.uint8))
    return train, test
