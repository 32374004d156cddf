"""Evaluation during training (`dcgan train --eval-every K`): its settings, its scorers, and which result is best.

The trainer (train.py) decides when to evaluate: after every K-th epoch and at the end of the run,
before that step's checkpoint is written. This module decides the rest:
- `resolve_evaluation`: the metric kind of the data and the settings left open (eval_n, best_metric, ...);
- `TrainingEvaluator`: rank 0's scorers, made once before the run folder (the digit classifier; with
  --eval-fid the Inception network and the training images' features), and the scoring of the
  sampling generator with `dcgan eval`'s metrics on the same z every time (evaluate.score_generator);
- `improves_best`: whether a result beats the best so far, which checkpoints/best.pt holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from .classifier import load_classifier
from .config import TrainConfig
from .errors import DcganError
from .evaluate import HIGHER_IS_BETTER, TRAINING_FID_SAMPLES, TRAINING_SAMPLES, check_best_metric, metric_kind, score_generator
from .fid import FidReference, fid_reference

EVAL_SEED = 0  # noise seed of every evaluation during training: the z of `dcgan eval`'s default, the same at every step


def resolve_evaluation(config: TrainConfig) -> tuple[TrainConfig, Optional[str]]:
    """With eval_every: the metric kind of the data (None: colour data, FID/KID alone), and eval_fid, eval_n,
    best_metric and inception_weights filled in; one line if there is no metric."""
    if not config.eval_every:
        return config, None
    fid = config.eval_fid or config.inception_weights is not None  # naming the weights file asks for FID, as in dcgan eval
    try:
        kind = metric_kind(config.data, config.channels, fid=fid, fid_flag="--eval-fid")
    except DcganError as error:
        raise DcganError(f"--eval-every: {error}") from None
    best_metric = check_best_metric(config.best_metric, kind, fid=fid)
    eval_n = config.eval_n or (TRAINING_SAMPLES[kind] if kind else TRAINING_FID_SAMPLES)
    weights = config.inception_weights
    if weights is not None:  # stored absolute, as the data path is, so `--resume` works from any working directory
        weights = str(Path(weights).expanduser().resolve())
    return config.replace(eval_fid=fid, eval_n=eval_n, best_metric=best_metric, inception_weights=weights), kind


class TrainingEvaluator:
    """Rank 0's scorers for a resolved config (see resolve_evaluation), loaded when made."""

    def __init__(self, config: TrainConfig, kind: Optional[str], device: torch.device, log: Callable[[str], None]):
        self.config, self.kind = config, kind
        self.fid_reference: Optional[FidReference] = None
        self.classifier = None
        if config.eval_fid:
            # made once, before the classifier and the run folder: a missing or wrong weights file fails at once, with
            # nothing made, and each evaluation pays only for its samples. cache_dir None: the weights file and the
            # feature cache of `dcgan eval` (the training images themselves are read through config.cache_dir)
            weights = Path(config.inception_weights) if config.inception_weights else None
            with torch.random.fork_rng(devices=[]):  # building the network draws its initial weights from the global stream
                self.fid_reference = fid_reference(config, config.eval_n, weights, None, device, log=log)
        if kind:
            with torch.random.fork_rng(devices=[]):  # training it the first time seeds torch's global stream
                self.classifier = load_classifier(config.cache_dir, log=log)

    def score(self, generator: torch.nn.Module) -> dict:
        """`dcgan eval`'s result for eval_n samples of `generator`, drawn from the noise of EVAL_SEED."""
        with torch.random.fork_rng(devices=[]):  # belt and braces: score_generator draws z from a generator of its own
            return score_generator(
                generator, self.kind, self.config.eval_n, EVAL_SEED, self.classifier, fid=self.fid_reference,
                truncation=self.config.truncation,
            )  # fmt: skip


def improves_best(best: Optional[dict], metric: str, n: int, value: float) -> bool:
    """Whether `value` of `metric` over n samples beats `best` ({metric, value, n, ...} or None)."""
    if best is None or (best["metric"], best["n"]) != (metric, n):
        return True  # the first evaluation, or the first since a resume changed --best-metric or --eval-n
    return value > best["value"] if HIGHER_IS_BETTER[metric] else value < best["value"]
