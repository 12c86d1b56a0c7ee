"""The benchmark datasets: where their files are looked for, how they are checked, split and binarised.

Splits (docs/design.md section 5): MNIST and Fashion-MNIST train on the first 50,000 training images,
validate on the remaining 10,000 and test on the 10,000 test images; binarized MNIST comes split
50k/10k/10k; Omniglot (IWAE's ``chardata.mat``) keeps its last 1,345 training images for validation.

Binarisation: ``dynamic`` draws a fresh ``b ~ Bernoulli(x)`` for every training batch (the
validation and test sets are binarised once, with a fixed seed, so that every evaluation sees the
same data); ``threshold`` uses ``x > 0.5``; ``static`` means the files are already binary.

Files are looked for, in order, in ``--data-dir``, the cache folder (``$ARMGRAD_DATA`` or
``~/.cache/armgrad``, one sub-folder per dataset) and the system folder where a distribution package
puts them (Debian's ``dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist). A missing file is
downloaded into the cache where a network allows, and checked against its SHA-256 where one is
recorded; otherwise the error says which file, where it was looked for and how to get it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .formats import DataFormatError, read_amat, read_chardata, read_idx


@dataclass(frozen=True)
class DataFile:
    name: str
    sha256: str | None = None  # of the uncompressed content; None where no verified value is recorded


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from: names, checksums, a download base and a system folder."""

    title: str
    folder: str
    files: tuple
    url: str | None
    system_dirs: tuple = ()
    hint: str = ""


# SHA-256 of the uncompressed IDX content, measured on the files of Debian's dataset-fashion-mnist
# (identical in size and layout to the release: 47,040,016 / 60,008 / 7,840,016 / 10,008 bytes).
FASHION = Source(
    "Fashion-MNIST",
    "fashion-mnist",
    (
        DataFile("train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        DataFile("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        DataFile("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        DataFile("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
    url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    hint="on Debian: apt-get install dataset-fashion-mnist",
)
# No verified checksums are recorded for the files below (they could not be fetched where this
# table was written); they are checked for their exact format and size instead.
MNIST = Source(
    "MNIST",
    "mnist",
    (
        DataFile("train-images-idx3-ubyte"),
        DataFile("train-labels-idx1-ubyte"),
        DataFile("t10k-images-idx3-ubyte"),
        DataFile("t10k-labels-idx1-ubyte"),
    ),
    url="https://ossci-datasets.s3.amazonaws.com/mnist/",
)
MNIST_STATIC = Source(
    "binarized MNIST (Larochelle & Murray)",
    "mnist-static",
    (
        DataFile("binarized_mnist_train.amat"),
        DataFile("binarized_mnist_valid.amat"),
        DataFile("binarized_mnist_test.amat"),
    ),
    url="http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
)
OMNIGLOT = Source(
    "Omniglot (IWAE chardata.mat)",
    "omniglot",
    (DataFile("chardata.mat"),),
    url="https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/",
)

DATASETS = {
    "fashion-mnist": (FASHION, "dynamic"),
    "fashion-mnist-threshold": (FASHION, "threshold"),
    "mnist": (MNIST, "dynamic"),
    "mnist-threshold": (MNIST, "threshold"),
    "mnist-static": (MNIST_STATIC, "static"),
    "omniglot": (OMNIGLOT, "dynamic"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ARMGRAD_DATA", Path.home() / ".cache" / "armgrad"))


def _candidates(source: Source, data_dir) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / source.folder]
    dirs.append(cache_dir() / source.folder)
    dirs += [Path(d) for d in source.system_dirs]
    return dirs


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return _content_sha256_uncached(Path(path))


def _content_sha256(path: Path) -> str:
    """SHA-256 of the file's content (of the decompressed bytes for ``.gz``), computed once per file version."""
    stat = Path(path).stat()
    return _cached_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _content_sha256_uncached(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataFormatError(
            f"{path} is damaged (truncated, or not the compressed file its name says: {error}); "
            f"delete it and fetch it again"
        ) from None
    return digest.hexdigest()


def _download(source: Source, file: DataFile, target_dir: Path) -> Path | None:
    """Fetch ``file`` (trying ``.gz`` first for IDX) into the cache; ``None`` if no network allows it."""
    if source.url is None:
        return None
    target_dir.mkdir(parents=True, exist_ok=True)
    names = [file.name + ".gz", file.name] if "idx" in file.name else [file.name]
    for name in names:
        target = target_dir / name
        partial = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(source.url + name, timeout=20) as response, open(partial, "wb") as out:
                out.write(response.read())
        except OSError:
            partial.unlink(missing_ok=True)
            continue
        os.replace(partial, target)
        return target
    return None


def locate(source: Source, file: DataFile, data_dir=None, download: bool = True) -> Path:
    """The path of one data file, found or downloaded, its checksum verified where one is recorded."""
    searched = _candidates(source, data_dir)
    for folder in searched:
        for name in (file.name, file.name + ".gz"):
            if (folder / name).is_file():
                return _verified(folder / name, file, source)
    if download:
        fetched = _download(source, file, cache_dir() / source.folder)
        if fetched is not None:
            return _verified(fetched, file, source)
    looked = "\n  ".join(str(d) for d in searched)
    ways = [f"pass --data-dir DIR with {file.name} (or {file.name}.gz) in it"]
    if source.hint:
        ways.insert(0, source.hint)
    if source.url:
        ways.append(
            f"download {source.url}{file.name}{'.gz' if 'idx' in file.name else ''} into {cache_dir() / source.folder}"
        )
    raise FileNotFoundError(
        f"{source.title}: file {file.name} not found. Looked in:\n  {looked}\nTo get it: " + "; or ".join(ways)
    )


def _verified(path: Path, file: DataFile, source: Source) -> Path:
    if file.sha256 is not None:
        actual = _content_sha256(path)
        if actual != file.sha256:
            raise DataFormatError(
                f"{source.title}: {path} is corrupt or not the original file: SHA-256 of its content is "
                f"{actual}, expected {file.sha256}. Delete it and fetch it again."
            )
    return path


@dataclass
class BinaryImages:
    """A dataset of 784-pixel images, split, with its binarisation.

    ``train``, ``valid``, ``test``: ``(N, 784)`` float32 in [0, 1] (grey levels for ``dynamic``,
    already binary otherwise). ``train_mean``: ``(784,)`` mean training image (of the grey levels).
    """

    name: str
    binarization: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    _fixed: dict = field(default_factory=dict, repr=False)
    files: dict = field(default_factory=dict)  # where the data came from: path -> SHA-256 of its content

    @property
    def train_mean(self) -> torch.Tensor:
        return self.train.mean(0)

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Binary training images ``(B, 784)``; freshly binarised for ``dynamic``."""
        x = self.train.index_select(0, indices)
        if self.binarization == "dynamic":  # 1[u < x] written over u: (u < x).float() in one operator
            return torch.rand(x.shape, generator=generator).lt_(x)
        return x

    def split(self, name: str) -> torch.Tensor:
        """The binary ``valid`` or ``test`` set (``dynamic``: binarised once, with a fixed seed)."""
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {name!r}")
        x = getattr(self, name)
        if self.binarization != "dynamic":
            return x
        if name not in self._fixed:
            gen = torch.Generator().manual_seed({"train": 1, "valid": 2, "test": 3}[name])
            self._fixed[name] = (torch.rand(x.shape, generator=gen) < x).float()
        return self._fixed[name]


def _images(array: np.ndarray, path) -> torch.Tensor:
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise DataFormatError(f"{path}: expected images of 28 x 28 pixels, got an array of shape {array.shape}")
    return torch.from_numpy(array.reshape(-1, 784).astype(np.float32) / 255.0)


def _hold_out(images: torch.Tensor, count: int, canonical_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last ``count`` images for validation (the last sixth for files of another size)."""
    if images.shape[0] != canonical_size:
        count = images.shape[0] // 6
    return images[:-count], images[-count:]


def load_dataset(name: str, data_dir=None, download: bool = True) -> BinaryImages:
    """Load a dataset by name (one of :data:`DATASETS`), split and ready to binarise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    source, binarization = DATASETS[name]
    if data_dir is not None and not Path(data_dir).is_dir():
        raise FileNotFoundError(
            f"data_dir {str(data_dir)!r} is not an existing folder (a folder you name is searched "
            f"first and must exist; leave it out to search the cache and system folders)"
        )
    try:
        return _load(name, source, binarization, data_dir, download)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataFormatError(
            f"{source.title}: a data file is damaged (truncated or not what its name says: "
            f"{error}); delete it and fetch it again"
        ) from None


def _load(name, source, binarization, data_dir, download) -> BinaryImages:
    paths = [locate(source, f, data_dir, download) for f in source.files]
    files = {str(p.resolve()): _content_sha256(p) for p in paths}
    if source is OMNIGLOT:
        train, test = (torch.from_numpy(a) for a in read_chardata(paths[0]))
        train, valid = _hold_out(train, 1345, 24345)
    elif source is MNIST_STATIC:
        train, valid, test = (torch.from_numpy(read_amat(p).astype(np.float32)) for p in paths)
    else:
        full, test = _images(read_idx(paths[0]), paths[0]), _images(read_idx(paths[2]), paths[2])
        train, valid = _hold_out(full, 10000, 60000)
    if binarization == "threshold":
        train, valid, test = ((x > 0.5).float() for x in (train, valid, test))
    return BinaryImages(name, binarization, train, valid, test, files=files)
