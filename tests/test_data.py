"""Data loaders on small files written in each dataset's exact format."""

import gzip

import numpy as np
import pytest
import torch

from armgrad.data import DataFormatError, load_dataset, read_amat, read_idx, write_amat, write_chardata, write_idx


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


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    write_idx(path, array)
    assert np.array_equal(read_idx(path), array)
    raw = gzip.open(path).read() if gz else path.read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3]) and raw[4:8] == (2).to_bytes(4, "big")


def test_mnist_splits_and_binarisations(tmp_path):
    train, test = write_mnist(tmp_path / "mnist")
    data = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert data.train.shape == (100, 784) and data.valid.shape == (20, 784) and data.test.shape == (30, 784)
    torch.testing.assert_close(data.train[0], torch.from_numpy(train[0].reshape(-1) / 255.0).float())
    batch = data.train_batch(torch.arange(10), torch.Generator().manual_seed(0))
    assert set(batch.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(data.split("test"), data.split("test"))  # fixed once
    thresholded = load_dataset("mnist-threshold", data_dir=tmp_path / "mnist", download=False)
    assert torch.equal(thresholded.test, torch.from_numpy(test.reshape(30, 784) / 255.0 > 0.5).float())
    assert torch.equal(thresholded.train_batch(torch.arange(3)), thresholded.train[:3])


def test_static_mnist_amat(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in [("train", 12), ("valid", 4), ("test", 5)]:
        write_amat(tmp_path / f"binarized_mnist_{split}.amat", rng.integers(0, 2, size=(n, 784)))
    data = load_dataset("mnist-static", data_dir=tmp_path, download=False)
    assert (data.train.shape, data.valid.shape, data.test.shape) == ((12, 784), (4, 784), (5, 784))
    (tmp_path / "bad.amat").write_text("0 1 2\n")
    with pytest.raises(DataFormatError, match="bad.amat"):
        read_amat(tmp_path / "bad.amat")


def test_omniglot_chardata(tmp_path):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(2)
    train, test = rng.random((60, 784)).astype(np.float32), rng.random((7, 784)).astype(np.float32)
    write_chardata(tmp_path / "chardata.mat", train, test)
    data = load_dataset("omniglot", data_dir=tmp_path, download=False)
    assert data.train.shape == (50, 784) and data.valid.shape == (10, 784)
    torch.testing.assert_close(data.test, torch.from_numpy(test))


def test_missing_file_says_which_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message and "download" in message


def test_corrupt_and_truncated_files(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x01\x02\x03garbage")
    with pytest.raises(DataFormatError, match="not an IDX file"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataFormatError, match="IDX header says shape"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_checksum_mismatch_is_reported(tmp_path):
    write_mnist(tmp_path / "fashion-mnist")  # right format, but not the real Fashion-MNIST
    with pytest.raises(DataFormatError, match="SHA-256"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
