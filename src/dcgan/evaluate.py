"""`dcgan eval`: score a run's generator (or real data) with the digit classifier, offline.

    grayscale runs (mnist, digits, IDX digits)  -> digit_stats over N samples (default 10,000)
    stacked-mnist runs                          -> stacked_stats over N samples (default 26,000, the papers' protocol)

Results are printed and appended to RUN/eval.jsonl, one JSON object a line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .classifier import load_classifier, predict
from .errors import DcganError
from .metrics import digit_stats, stacked_stats
from .run_files import read_config
from .sample import generate, latent, load_generator

DEFAULT_SAMPLES = {"digits": 10_000, "stacked": 26_000}


def metric_kind(data: str, channels: int) -> str:
    if data == "stacked-mnist":
        return "stacked"
    if channels == 1:
        return "digits"
    raise DcganError(f"no offline metric for colour data ({data}) yet: the digit metrics need grayscale or stacked-mnist runs")


def score_images(images: np.ndarray, kind: str, classifier) -> dict:
    """Metrics of uint8 images (N, H, W, C): digits for C == 1, Stacked-MNIST modes for C == 3."""
    if kind == "digits":
        return digit_stats(*predict(classifier, images[..., 0]))
    channels = images.transpose(0, 3, 1, 2).reshape(-1, *images.shape[1:3])  # (3N, H, W): R, G, B of each image
    classes, confidences = predict(classifier, channels)
    return stacked_stats(classes.reshape(-1, 3), confidences.reshape(-1, 3))


def evaluate_run(run: Path, n: Optional[int] = None, seed: int = 0, cache_dir: Optional[Path] = None, log=print) -> dict:
    run = Path(run)
    config = read_config(run)
    kind = metric_kind(config.data, config.channels or 1)
    n = n or DEFAULT_SAMPLES[kind]
    generator = load_generator(run)
    classifier = load_classifier(cache_dir, log=log)
    started = time.perf_counter()
    images = generate(generator, latent(n, generator.config.nz, seed))
    result = {"n": n, "seed": seed, **score_images(images, kind, classifier)}
    result["seconds"] = round(time.perf_counter() - started, 2)
    with open(run / "eval.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result
