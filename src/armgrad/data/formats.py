"""The canonical file formats of the binary-image benchmarks, read and written exactly.

- IDX (MNIST, Fashion-MNIST): big-endian header ``0 0 <type> <ndim>``, ``ndim`` int32 sizes,
  then the raw array; optionally gzip-compressed (``.gz``).
- ``.amat`` (binarized MNIST of Larochelle & Murray, 2011): one image a line, 784
  space-separated 0/1 values.
- ``chardata.mat`` (Omniglot as prepared for IWAE, Burda et al., 2016): a MATLAB v5 file with
  ``data`` (784 x 24,345) and ``testdata`` (784 x 8,070), pixels in [0, 1], each column an image
  stored in Fortran (column-major) order. Reading it needs scipy.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_IDX_TYPES: dict[int, np.dtype | type] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataFormatError(ValueError):
    """A data file exists but is not in the format it should be."""


def _open(path: Path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``) into a numpy array of its stored type and shape."""
    path = Path(path)
    with _open(path) as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataFormatError(f"{path} is not an IDX file: its header is {data[:4]!r}, expected 0 0 <type> <ndim>")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataFormatError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzip-compressed if ``path`` ends in ``.gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def read_amat(path, pixels: int = 784) -> np.ndarray:
    """Read a binarized-MNIST ``.amat`` file: ``(N, 784)`` uint8 of 0 and 1."""
    path = Path(path)
    array = np.loadtxt(path, dtype=np.float32, ndmin=2)
    if array.shape[1] != pixels or not np.isin(array, (0.0, 1.0)).all():
        raise DataFormatError(f"{path}: expected lines of {pixels} values in {{0, 1}}, got shape {array.shape}")
    return array.astype(np.uint8)


def write_amat(path, array: np.ndarray) -> None:
    np.savetxt(path, np.asarray(array, dtype=np.uint8), fmt="%d", delimiter=" ")


def read_chardata(path) -> tuple[np.ndarray, np.ndarray]:
    """Read IWAE's Omniglot ``chardata.mat``: ``(train, test)`` as ``(N, 784)`` float32 in [0, 1]."""
    try:
        from scipy.io import loadmat
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("reading Omniglot's chardata.mat needs scipy: pip install 'armgrad[experiments]'") from error
    raw = loadmat(str(path))
    for key in ("data", "testdata"):
        if key not in raw or raw[key].shape[0] != 784:
            raise DataFormatError(f"{path}: expected a 784 x N matrix named {key!r} (IWAE's chardata.mat)")

    def images(matrix):  # columns are images in Fortran order, as in the IWAE code
        return matrix.T.astype(np.float32).reshape(-1, 28, 28).reshape(-1, 784, order="F")

    return images(raw["data"]), images(raw["testdata"])


def write_chardata(path, train: np.ndarray, test: np.ndarray) -> None:
    """Write ``(N, 784)`` arrays in chardata.mat's layout (for tests and conversions)."""
    from scipy.io import savemat

    def columns(images):  # the inverse of read_chardata's Fortran-order reshape: a per-image transpose
        return images.reshape(-1, 28, 28).transpose(0, 2, 1).reshape(-1, 784).T

    savemat(str(path), {"data": columns(train).astype(np.float64), "testdata": columns(test).astype(np.float64)})
