"""data/datasets.py: the datasets from their files: splits, binarisation, checksums, clear errors."""

from __future__ import annotations

import pytest
import torch

from armgrad.data import DataFormatError, load_dataset

from test_data import empty_cache, write_mnist  # noqa: F401  (empty_cache: an autouse fixture)


def test_mnist_splits_and_binarisations(tmp_path):
    train, test = write_mnist(tmp_path / "mnist")
    data = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert data.train.shape == (100, 784) and data.valid.shape == (20, 784) and data.test.shape == (30, 784)
    torch.testing.assert_close(data.train[0], torch.from_numpy(train[0].reshape(-1) / 255.0).float())
    batch = data.train_batch(torch.tensor([3, 1, 3, 7]), torch.Generator().manual_seed(0))
    assert set(batch.unique().tolist()) <= {0.0, 1.0} and batch.dtype == torch.float32
    # the dynamic binarisation: 1[u < grey level], one uniform per pixel from the generator, rows in index order
    u = torch.rand(4, 784, generator=torch.Generator().manual_seed(0))
    assert torch.equal(batch, (u < data.train[[3, 1, 3, 7]]).float())
    assert torch.equal(data.split("test"), data.split("test"))  # fixed once
    thresholded = load_dataset("mnist-threshold", data_dir=tmp_path / "mnist", download=False)
    assert torch.equal(thresholded.test, torch.from_numpy(test.reshape(30, 784) / 255.0 > 0.5).float())
    assert torch.equal(thresholded.train_batch(torch.arange(3)), thresholded.train[:3])


def test_missing_file_says_which_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message and "download" in message


def test_checksum_mismatch_is_reported(tmp_path):
    write_mnist(tmp_path / "fashion-mnist")  # right format, but not the real Fashion-MNIST
    with pytest.raises(DataFormatError, match="SHA-256"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
