"""Decode once, train many epochs: a Source -> one uint8 array (N, H, W, C) -> float batches.

The transform is the tutorial's: resize the shorter side to the image size (bilinear), center
crop, scale to [-1, 1]; `channels` converts to grayscale or RGB. Decoding happens once: the
decoded uint8 images are written to a cache file keyed by source, size and channels, and read
back memory-mapped, so later epochs and later runs never decode again. A source that changes
(files added, removed or modified) gets a new key and is decoded afresh.

Undecodable files among good ones are skipped and counted; the count is reported once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from PIL import Image

from .errors import DcganError
from .sources import Loader, Source

CACHE_FORMAT = 1  # bump when the transform changes, so old cache files are not reused
DECODE_CHUNK = 256  # images handed to the decoding threads at a time (bounds memory)


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, C); memory-mapped when it came from the cache
    source: Source
    skipped: int  # files that could not be decoded
    cache_path: Optional[Path]  # None when kept in memory only

    def __len__(self) -> int:
        return len(self.images)


def preprocess(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """PIL image -> uint8 (size, size, channels): shorter side resized, then center-cropped."""
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    if (width, height) != (size, size):
        # torchvision's Resize(int) on a PIL image: shorter side -> size, aspect ratio kept
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        # torchvision's CenterCrop: offsets rounded half to even
        left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.uint8)
    return array.reshape(size, size, channels)


def default_cache_dir() -> Path:
    if os.environ.get("DCGAN_CACHE"):
        return Path(os.environ["DCGAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dcgan"


def cache_key(source: Source, size: int, channels: int) -> str:
    digest = hashlib.sha1(f"{CACHE_FORMAT}\0{source.fingerprint}\0{size}\0{channels}".encode()).hexdigest()
    return f"{source.name}-{size}px-{channels}ch-{digest[:16]}"


def load_images(source: Source, size: int, channels: int, cache_dir: Optional[Path] = None, log=print) -> ImageSet:
    """Decoded images of `source`, from the cache when it is fresh, else decoded now (and cached)."""
    if not source.fingerprint:  # nothing stable to key a cache on (the `fake` source)
        images, skipped = _decode_in_memory(source, size, channels)
        return ImageSet(images, source, skipped, None)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(source, size, channels)
    data_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    meta = _read_meta(meta_path)
    if meta is None or not data_path.is_file() or data_path.stat().st_size != int(np.prod(meta["shape"])):
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DcganError(f"cannot create the data cache folder {cache_dir}: {error.strerror}") from None
        started = time.perf_counter()
        meta = _decode_to_file(source, size, channels, data_path, meta_path)
        log(f"decoded {meta['shape'][0]} images from {source.name} in {time.perf_counter() - started:.1f} s; cached in {data_path}")
    images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=tuple(meta["shape"]))
    return ImageSet(images, source, meta["skipped"], data_path)


def _read_meta(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _decode_one(loader: Loader, size: int, channels: int) -> Optional[np.ndarray]:
    try:
        return preprocess(loader(), size, channels)
    except DcganError:
        raise
    except Exception:  # untrusted files fail in many ways (truncated, corrupt, bomb); each is one skip
        return None


def _decoded_chunks(source: Source, size: int, channels: int) -> Iterator[list[Optional[np.ndarray]]]:
    """Decode in threads (Pillow releases the GIL while decoding and resizing), in bounded chunks."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(source), DECODE_CHUNK):
            chunk = source.loaders[start : start + DECODE_CHUNK]
            yield list(pool.map(lambda loader: _decode_one(loader, size, channels), chunk))


def _no_images_error(source: Source) -> DcganError:
    return DcganError(f"none of the {len(source)} image files in {source.name} could be decoded")


def _decode_in_memory(source: Source, size: int, channels: int) -> tuple[np.ndarray, int]:
    decoded = [image for chunk in _decoded_chunks(source, size, channels) for image in chunk]
    good = [image for image in decoded if image is not None]
    if not good:
        raise _no_images_error(source)
    return np.stack(good), len(decoded) - len(good)


def _decode_to_file(source: Source, size: int, channels: int, data_path: Path, meta_path: Path) -> dict:
    """Stream decoded images into a raw file; publish it (rename) only when complete."""
    partial = data_path.with_name(f"{data_path.name}.{os.getpid()}.partial")
    count = skipped = 0
    try:
        with open(partial, "wb") as out:
            for chunk in _decoded_chunks(source, size, channels):
                for image in chunk:
                    if image is None:
                        skipped += 1
                    else:
                        out.write(image.tobytes())
                        count += 1
            out.flush()
            os.fsync(out.fileno())
        if count == 0:
            raise _no_images_error(source)
        os.replace(partial, data_path)
    except OSError as error:
        raise DcganError(f"cannot write the data cache {data_path}: {error.strerror}") from None
    finally:
        if partial.exists():
            partial.unlink()
    meta = {"shape": [count, size, size, channels], "skipped": skipped, "source": source.fingerprint}
    tmp_meta = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.partial")
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_meta, meta_path)
    return meta


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return batch.float().div_(127.5).sub_(1.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C)."""
    scaled = (images.detach().float().clamp(-1, 1) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Batches:
    """Shuffled batches of an ImageSet; epoch e's order depends only on (seed, e).

    With several processes `batch_size` is each one's: a step takes the next global batch of
    batch_size * world_size images from the epoch's permutation, and rank r keeps every
    world_size-th of them from position r. DistributedSampler with set_epoch(e) shards an epoch the
    same way (rank r gets order[r::W], batched by B), so the ranks see disjoint shares of each global
    batch and a new shuffle each epoch. Sharding this one permutation rather than using a sampler keeps
    the order a function of (seed, epoch, variant), hence exact resume, and a W-process run sees step
    by step the very images of a single-process run with batch B*W.
    """

    def __init__(
        self, images: np.ndarray, batch_size: int, seed: int, drop_last: bool = True, rank: int = 0, world_size: int = 1
    ):
        if batch_size * world_size > len(images):
            if world_size == 1:
                raise DcganError(f"batch size {batch_size} is larger than the data set ({len(images)} images)")
            raise DcganError(
                f"the global batch ({world_size} processes x batch size {batch_size}) "
                f"is larger than the data set ({len(images)} images)"
            )
        self.images, self.batch_size, self.seed, self.drop_last = images, batch_size, seed, drop_last
        self.rank, self.world_size = rank, world_size

    @property
    def global_batch(self) -> int:
        """Images one step consumes over all processes."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        full, rest = divmod(len(self.images), self.global_batch)
        return full if self.drop_last or rest == 0 else full + 1

    def order(self, epoch: int, variant: int = 0) -> torch.Tensor:
        """A permutation of the images; `variant` > 0 gives other orders (retries after a divergence)."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_009 + variant)
        return torch.randperm(len(self.images), generator=generator)

    def epoch(self, epoch: int, start: int = 0, variant: int = 0) -> Iterator[torch.Tensor]:
        """This rank's batches of `epoch` (1-based), from step `start` on."""
        order = self.order(epoch, variant).numpy()
        size, ranks = self.global_batch, self.world_size
        for index in range(start, len(self)):
            chosen = order[index * size : (index + 1) * size]
            if len(chosen) % ranks:  # a short last batch: pad from the epoch's start, as DistributedSampler does
                chosen = np.concatenate([chosen, order[: ranks - len(chosen) % ranks]])
            yield to_tensor(self.images[chosen[self.rank :: ranks]])
