"""data/formats.py: the IDX, .amat and chardata.mat formats, read back from files written in each exact format."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from armgrad.data import DataFormatError, load_dataset, read_amat, read_idx, write_amat, write_chardata, write_idx

from test_data import empty_cache, write_mnist  # noqa: F401  (empty_cache: an autouse fixture)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    write_idx(path, array)
    assert np.array_equal(read_idx(path), array)
    raw = gzip.open(path).read() if gz else path.read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3]) and raw[4:8] == (2).to_bytes(4, "big")


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


def test_idx_of_every_type_is_read_big_endian_and_a_file_with_bytes_beyond_its_shape_is_refused(tmp_path):
    import struct

    values = np.array([[-2, 300], [7, -30000]])
    for code, dtype in ((0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8"), (0x09, "i1")):
        small = values if code != 0x09 else values // 300  # int8: within range
        path = tmp_path / f"t{code}.idx"
        path.write_bytes(bytes([0, 0, code, 2]) + struct.pack(">2i", 2, 2) + small.astype(dtype).tobytes())
        read = read_idx(path)
        assert read.shape == (2, 2) and (read == small).all(), code
    path.write_bytes(path.read_bytes() + b"\x00")  # one byte more than the header's shape
    with pytest.raises(DataFormatError, match="IDX header says shape"):
        read_idx(path)
