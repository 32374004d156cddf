"""`dcgan eval`: score a run's generator (or real data) with the digit classifier, offline.

    grayscale runs (mnist, digits, IDX digits)  -> digit_stats over N samples (default 10,000)
    stacked-mnist runs                          -> stacked_stats over N samples (default 26,000, the papers' protocol)
    with --fid, any run (colour ones too)       -> also fid, kid, kid_std, n_real against up to N training images (fid.py)

Results are printed and appended to RUN/eval.jsonl, one JSON object a line.

`dcgan train --eval-every K` scores the generator the same way (`score_generator`) every K epochs,
on fewer samples (TRAINING_SAMPLES; TRAINING_FID_SAMPLES for colour runs, which need --eval-fid),
and keeps the checkpoint with the best `--best-metric` (BEST_METRIC by default, fid for colour runs;
HIGHER_IS_BETTER says which way is better); see train.py and training_eval.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .classifier import load_classifier, predict
from .errors import DcganError
from .fid import FidReference, fid_reference
from .metrics import digit_stats, stacked_stats
from .run_files import read_config
from .models import Generator
from .sample import generate, latent, load_generator, truncate

DEFAULT_SAMPLES = {"digits": 10_000, "stacked": 26_000}
DEFAULT_FID_SAMPLES = 10_000  # colour runs, scored by FID/KID alone: the usual FID-10k (the papers' 50k is slow on a CPU)
TRAINING_SAMPLES = {"digits": 2_000, "stacked": 5_000}  # per evaluation during training: cheap, and the same z each time
# per evaluation of a colour run during training (--eval-fid): Inception on 2,000 samples is about 5 minutes on a CPU
# each time, where FID-10k would be 25; FID is biased upwards at small N, but equally for every checkpoint of the run
TRAINING_FID_SAMPLES = 2_000
KIND_METRICS = {"digits": ("classes_present", "confident", "kl_uniform"), "stacked": ("modes", "kl_uniform", "confident")}
BEST_METRIC = {"digits": "confident", "stacked": "kl_uniform"}  # --best-metric default: clear digits; even cover of the 1000 modes
# --best-metric: which way is better for each number an evaluation can report (fid and kid when it reports them)
HIGHER_IS_BETTER = {"classes_present": True, "confident": True, "modes": True, "kl_uniform": False, "fid": False, "kid": False}
FID_METRICS = ("fid", "kid")  # the --best-metric choices an evaluation with FID adds to its kind's


def metric_kind(data: str, channels: int, fid: bool = False, fid_flag: str = "--fid") -> Optional[str]:
    """The classifier metric of the data: digits, stacked, or None for colour data scored by FID/KID alone (fid=True).

    fid_flag: the option that turns FID on, named in the error (`dcgan eval --fid`, `dcgan train --eval-fid`).
    """
    if data == "stacked-mnist":
        return "stacked"
    if channels == 1:
        return "digits"
    if fid:
        return None
    raise DcganError(
        f"no classifier metric for colour data ({data}): the digit metrics need grayscale or stacked-mnist runs; "
        f"add {fid_flag} for FID and KID"
    )


def score_images(images: np.ndarray, kind: str, classifier) -> dict:
    """Metrics of uint8 images (N, H, W, C): digits for C == 1, Stacked-MNIST modes for C == 3."""
    if kind == "digits":
        return digit_stats(*predict(classifier, images[..., 0]))
    channels = images.transpose(0, 3, 1, 2).reshape(-1, *images.shape[1:3])  # (3N, H, W): R, G, B of each image
    classes, confidences = predict(classifier, channels)
    return stacked_stats(classes.reshape(-1, 3), confidences.reshape(-1, 3))


def check_best_metric(name: Optional[str], kind: Optional[str], fid: bool = False) -> str:
    """The --best-metric of `dcgan train` on `kind` runs (its default for None), or one line saying why `name` cannot be.

    kind None: colour data, scored by FID/KID alone. fid: whether the evaluations report fid and kid too
    (`--eval-fid`: off by default, since it costs minutes of InceptionV3 on a CPU every time).
    """
    if name is None:
        return BEST_METRIC[kind] if kind else "fid"  # colour runs have FID and KID alone; FID is the one papers report
    if name not in HIGHER_IS_BETTER:
        raise DcganError(f"unknown --best-metric '{name}': choose one of {', '.join(HIGHER_IS_BETTER)}")
    measured = (KIND_METRICS[kind] if kind else ()) + (FID_METRICS if fid else ())
    if name not in measured:
        hint = f" (with --eval-fid, also {' and '.join(FID_METRICS)})" if not fid else ""
        raise DcganError(f"--best-metric {name} is not measured here: choose one of {', '.join(measured)}{hint}")
    return name


def score_generator(
    generator: Generator,
    kind: Optional[str],
    n: int,
    seed: int,
    classifier,
    *,
    fid: Optional[FidReference] = None,
    truncation: float = 1.0,
) -> dict:
    """{n, seed, truncation, metrics..., seconds} of n samples drawn from latent(n, nz, seed) scaled by truncation.

    `kind` None skips the classifier (colour runs); `fid` (see `fid.fid_reference`, made once per run:
    it holds the real images' features) adds fid, kid, kid_std and n_real.

    Draws with BatchNorm in eval mode under no_grad and restores the generator's mode (see
    `sample.generate`), and the noise has a generator of its own: scoring changes neither the
    network nor any random stream, so training can call it between steps.
    """
    started = time.perf_counter()
    images = generate(generator, truncate(latent(n, generator.config.nz, seed), truncation))
    result = {"n": n, "seed": seed, "truncation": truncation, **(score_images(images, kind, classifier) if kind else {})}
    if fid is not None:
        result.update(fid.score(images, seed))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def append_result(run: Path, result: dict) -> None:
    with open(Path(run) / "eval.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


def evaluate_run(
    run: Path,
    n: Optional[int] = None,
    seed: int = 0,
    cache_dir: Optional[Path] = None,
    log=print,
    *,
    fid: bool = False,
    inception_weights: Optional[Path] = None,
    device: Optional[torch.device] = None,
    checkpoint: Optional[Path] = None,
    truncation: Optional[float] = None,
) -> dict:
    """Score RUN's newest generator and append the row to RUN/eval.jsonl; fid=True adds FID and KID.

    `device` (default the CPU) runs the generator and Inception; the digit classifier stays on the CPU.
    `checkpoint` (such as RUN/checkpoints/best.pt) is scored instead of the newest; the row names it.
    `truncation` None draws as the run's grids do (its config's truncation); 1 scores all that G draws.
    """
    run = Path(run)
    config = read_config(run)
    kind = metric_kind(config.data, config.channels or 1, fid)
    n = n or (DEFAULT_SAMPLES[kind] if kind else DEFAULT_FID_SAMPLES)
    generator = load_generator(None if checkpoint else run, checkpoint).to(device or "cpu")
    # the Inception weights are found and checked first, so a missing file fails before any slow work
    reference = fid_reference(config, n, inception_weights, cache_dir, device, log=log) if fid else None
    classifier = load_classifier(cache_dir, log=log) if kind else None
    truncation = config.truncation if truncation is None else truncation
    result = score_generator(generator, kind, n, seed, classifier, fid=reference, truncation=truncation)
    if checkpoint is not None:
        result = {"checkpoint": Path(checkpoint).name, **result}
    append_result(run, result)
    return result
