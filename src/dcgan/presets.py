"""Named bundles of training settings: `dcgan train --preset NAME`.

A preset fills in TrainConfig fields before anything else does: a --config file overrides a preset,
and flags override both. The run's config.json keeps the resolved values and the preset's name.

    tutorial   the PyTorch DCGAN tutorial exactly: 64x64, widths 64, batch 128, 5 epochs, Adam 2e-4 / 0.5,
               non-saturating BCE, BatchNorm in both networks, fp32, no stabiliser
    stable     the settings that scored best in our measurements (README, "Sample quality")
"""

from __future__ import annotations

from .errors import DcganError

PRESETS: dict[str, dict] = {
    "tutorial": {
        "image_size": 64,  # the tutorial resizes every dataset to 64x64
        "ngf": 64,
        "ndf": 64,
        "nz": 100,
        "batch_size": 128,
        "epochs": 5,
        "lr": 2e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        "real_label": 1.0,
        "fake_label": 0.0,
        "loss": "bce",
        "spectral_norm": False,
        "pack": 1,
        "diffaug": None,
        "r1": 0.0,
        "ema_decay": None,
        "precision": "fp32",  # the tutorial has no autocast
    },
    # measured on the 5,000 embedded digits (README, "Sample quality"): against the tutorial's batch and
    # learning rate, more and faster steps and translated D inputs raised the confident fraction from
    # 45% to about 57% in the same time, and a light R1 penalty on D to 62% with the class KL from
    # 0.08 to 0.02; hinge + spectral norm collapsed to a few classes there, R1 5 was slower to learn
    "stable": {
        "batch_size": 64,
        "lr": 4e-4,
        "diffaug": "translation",
        "r1": 1.0,  # lazy, every r1_every (16) D steps: about 4% more time a step (README, Stabilisers)
        "min_steps": 2400,  # small data sets: about as long as the default job's 1,200 steps of batch 128
    },
}


def preset_options(name: str) -> dict:
    """The TrainConfig fields of preset NAME, plus the name itself."""
    if name not in PRESETS:
        raise DcganError(f"unknown preset '{name}': use {', '.join(PRESETS)}")
    return {**PRESETS[name], "preset": name}
