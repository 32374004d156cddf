"""FID and KID of generated images against a run's training images, on FID Inception pool features.

    fid      Frechet distance between Gaussians fitted to the two feature sets (lower is better)
    kid      unbiased polynomial-kernel MMD^2, mean over random subsets (lower is better; 0 for equal distributions)
    kid_std  its standard deviation over those subsets
    n_real   training images the generated ones were compared with

The real images are the run's training data, read through the same source and decoded-image cache
as training (resized to the run's image size, so both sides went through the same transform), up to
as many as there are generated images: a fixed random subset, the same for every evaluation, since
data sets are often stored class by class. Their features are cached on disk, keyed by the data's
cache key, the weights file's sha256 and the count, so later evaluations of a run (or of any run on
the same data) only pay for the generated images. Both FID and KID are biased by small samples:
compare numbers computed with the same N only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .config import TrainConfig
from .data import cache_key, default_cache_dir, load_images
from .errors import DcganError
from .inception import FIDInceptionV3, file_digest, find_weights, load_inception, pool_features, weights_folder
from .metrics import frechet_distance_of_features, kernel_inception_distance
from .sources import resolve_source

REAL_SUBSET_SEED = 0  # picks which training images are compared with; fixed so their cached features are reused


@dataclass(frozen=True)
class FeatureNetwork:
    """The FID Inception, and the sha256 of its weights file, which keys the cache of real-image features."""

    network: FIDInceptionV3
    weights_digest: str

    def features(self, images: np.ndarray) -> np.ndarray:
        return pool_features(self.network, images)  # (N, 2048) float32


def load_feature_network(
    weights: Optional[Path] = None, cache_dir: Optional[Path] = None, device: Optional[torch.device] = None
) -> FeatureNetwork:
    """The Inception with the given weights file, else the cache folder's; on `device` (default: the CPU)."""
    path = find_weights(weights, cache_dir)
    return FeatureNetwork(load_inception(path).to(device or "cpu"), file_digest(path))


def real_images(config: TrainConfig, count: int, cache_dir: Optional[Path] = None, log: Callable[[str], None] = print):
    """Up to `count` of the run's training images, uint8 (n, H, W, C), and the data's cache key (None: uncached)."""
    source = resolve_source(config.data)
    image_set = load_images(source, config.image_size, config.channels, config.cache_dir or cache_dir, log=log)
    chosen = np.arange(len(image_set))
    if len(chosen) > count:
        chosen = np.sort(np.random.default_rng(REAL_SUBSET_SEED).choice(len(chosen), count, replace=False))
    key = cache_key(source, config.image_size, config.channels) if source.fingerprint else None
    return np.asarray(image_set.images[chosen]), key


def real_features(
    config: TrainConfig, count: int, network: FeatureNetwork, cache_dir: Optional[Path] = None, log: Callable[[str], None] = print
) -> np.ndarray:
    """Pool features of up to `count` training images, from the feature cache when it has them."""
    images, data_key = real_images(config, count, cache_dir, log)
    cache_file = None
    if data_key is not None:  # the `fake` source changes from run to run: nothing to key a cache on
        name = f"real-{data_key}-{network.weights_digest[:16]}-{len(images)}.npy"
        cache_file = weights_folder(cache_dir or default_cache_dir()) / "features" / name
        if cache_file.is_file():
            try:
                cached = np.load(cache_file)
                if cached.shape == (len(images), network.network.fc.in_features):
                    return cached
            except (OSError, ValueError):
                pass  # unreadable (cut short by a kill): computed again and rewritten below
    log(f"computing Inception features of {len(images)} training images (cached for later evaluations)")
    features = network.features(images)
    if cache_file is not None:
        _save_atomic(features, cache_file)
    return features


def _save_atomic(array: np.ndarray, path: Path) -> None:
    """Write then rename, so a reader never sees half a file; a cache that cannot be written is skipped."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except OSError:
        pass  # only a cache: the next evaluation computes the features again
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass(frozen=True)
class FidReference:
    """What generated images are measured against: the Inception and its features of the training images.

    Made once (`fid_reference`) and reused, so training can score its generator every few epochs
    and pay only for the generated images.
    """

    network: FeatureNetwork
    real: np.ndarray  # (n_real, 2048) pool features of training images
    log: Callable[[str], None] = print  # receives a line before each slow feature pass

    def score(self, fake_images: np.ndarray, seed: int = 0) -> dict:
        """fid, kid, kid_std and n_real of uint8 generated images (N, H, W, C); `seed` picks KID's subsets."""
        self.log(f"computing Inception features of {len(fake_images)} generated images")
        fake = self.network.features(fake_images)
        kid, kid_std = kernel_inception_distance(fake, self.real, seed=seed)
        return {"fid": frechet_distance_of_features(fake, self.real), "kid": kid, "kid_std": kid_std, "n_real": len(self.real)}


def fid_reference(
    config: TrainConfig,
    count: int,
    weights: Optional[Path] = None,
    cache_dir: Optional[Path] = None,
    device: Optional[torch.device] = None,
    log: Callable[[str], None] = print,
) -> FidReference:
    """The reference for FID/KID of `count` generated images of a run (resolved `config`): up to `count` real images.

    The weights file is found and checked before the data is read, so a missing file fails at once.
    """
    network = load_feature_network(weights, cache_dir, device)
    real = real_features(config, count, network, cache_dir, log)
    if len(real) < 2:
        raise DcganError(f"FID and KID need at least 2 training images; {config.data} has {len(real)}")
    return FidReference(network, real, log)
