"""Named bundles of training settings: `dcgan train --preset NAME`.

A preset fills in TrainConfig fields before anything else does: a --config file overrides a preset,
and flags override both. The run's config.json keeps the resolved values and the preset's name.

    tutorial   the PyTorch DCGAN tutorial exactly: 64x64, widths 64, batch 128, 5 epochs, Adam 2e-4 / 0.5,
               non-saturating BCE, BatchNorm in both networks, fp32, no stabiliser
    stable     the settings that scored best in our measurements (README, "Sample quality")
    plain      TrainConfig's own defaults: the tutorial's hyperparameters at the data's natural size

A new run that names no preset (neither flag nor --config file) starts from DATA_PRESETS[data]: the
embedded digit sets, where `stable` was measured, train with it; every other source with TrainConfig's
defaults, as `plain` does.
"""

from __future__ import annotations

from typing import Optional

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
        "ema_rampup": None,
        "truncation": 1.0,  # samples drawn from z as trained
        "precision": "fp32",  # the tutorial has no autocast
    },
    # measured on the 5,000 embedded digits (README, "Sample quality"): against the tutorial's batch and
    # learning rate, more and faster steps and translated D inputs raised the confident fraction from
    # 45% to about 57% in the same time, a light R1 penalty on D brought the class KL from 0.08 to
    # 0.02-0.03, and Adam without momentum (beta1 0, beta2 0.99, as StyleGAN2 pairs with R1) added
    # 1-13 points at every length on two seeds (3-5 at 2,400 steps), and a latent of 32 numbers instead
    # of 100 added 2.6-4 points at 2,400 steps on three seeds (16 and 64 were no better than 100); hinge
    # + spectral norm collapsed to a few classes there, R1 5 was slower to learn
    # InfoGAN codes (--info-codes 10, with 10 more latent numbers so that 32 stay continuous): with a
    # categorical code G no longer spends latent space on blends between digits, and the confident
    # fraction at 2,400 steps rose from 66, 67 and 63% to 75, 77.5 and 74% on three seeds (README)
    # no DiffAugment: with the codes, translating D's inputs held the digits back; without it the
    # confident fraction at 3,000 steps averaged 84.2% over five seeds against 77.6%, class KL lower on all five;
    # 20 categories instead of 10 (a digit that shares a category with another is drawn as blends of the
    # two; with twice the categories fewer digits share one) and an EMA of G (half-life 150 steps, ramped
    # up): 86.1% confident at 3,000 steps on three seeds against 82.4%, ahead on each (docs/sample-quality.md);
    # 30 categories: the default job scored 89.9, 89.7 and 86.5% on seeds 0-2 at 3,042 steps against 86.5, 86.7 and 83.8%
    "stable": {
        "nz": 62,  # 32 continuous numbers and the 30 of the code
        "info_codes": "30",
        "batch_size": 64,
        "lr": 4e-4,
        "beta1": 0.0,
        "beta2": 0.99,
        "r1": 1.0,  # lazy, every r1_every (16) D steps: about 4% more time a step (README, Stabilisers)
        "ema_decay": 0.9954,  # a half-life of 150 steps
        "ema_rampup": 0.1,  # reached after 1,500 steps; before that, 10% of the steps so far
        # small data sets: with D at the default width, the default job's 2,652 steps scored 88.6, 89.4 and
        # 85.2% on seeds 0-2, 1 point below 3,042 steps; the 2-core CPU they were measured on took 93-116 ms a
        # step from one day (or hour) to the next, and 2,652 steps leave room under 5 minutes for most of that
        # range, 3,042 little (mnist itself now trains a narrower D for longer: PRESET_DATA_CHANGES)
        "min_steps": 2600,
        # the truncation trick on the samples only (training is unchanged): the default job's five seeds scored
        # 92.0, 91.5, 90.3, 90.9 and 89.96% confident at 0.8 against 89.4, 88.7, 88.1, 88.4 and 88.2% at 1, class
        # KL 0.003-0.012; on stacked-mnist 85.8% of channels against 81.8%, 1000 modes both, KL 0.104 against
        # 0.083; samples of one class vary less: 92.3% of the real digits' spread against 97.5% (docs/sample-quality.md)
        "truncation": 0.8,
    },
    "plain": {},  # nothing changed: for the digit sets, where a run without a preset starts from stable
}

# the preset of a new run on this data that names none: the default job (`dcgan train`, embedded MNIST)
# trains with stable, since the job is there to show the best digits a few minutes can give, and stable
# scored better there on every measure (README, "Sample quality"); other data keep the tutorial's
# hyperparameters, since stable was measured on digits only
DATA_PRESETS = {"mnist": "stable", "stacked-mnist": "stable"}
STABLE_BY_DEFAULT = " and ".join(data for data, name in DATA_PRESETS.items() if name == "stable")  # for messages
R1_OFF_HINT = f"--r1 0; --preset stable, the default on {STABLE_BY_DEFAULT}, sets 1"  # the R1 refusals' way out


def default_preset(data: str) -> Optional[str]:
    """The preset a new run on `data` starts from when it names none (None: TrainConfig's defaults)."""
    return DATA_PRESETS.get(data)


# where a preset's best settings differ by data set (keyed by preset and data)
PRESET_DATA_CHANGES: dict[tuple[str, str], dict] = {
    # on mnist, a discriminator half as wide (ndf 16: widths 16, 32, 64): D's convolutions were most of a step,
    # which now takes about 0.6 times as long, so the default job trains 3,822 steps (49 epochs) in the time
    # 2,652 took; on seeds 0-4 it scored 89.4, 88.7, 88.1, 88.4 and 88.2% confident, 88.5% on average against
    # 86.7% (88.6, 89.4, 85.2, 82.9 and 87.4%); with three more runs on one thread (86.3, 83.8, 89.5%), 87.8%
    # over eight runs (docs/sample-quality.md)
    ("stable", "mnist"): {"ndf": 16, "min_steps": 3800},
    # on stacked-mnist, one code for each channel's digit, first of 10 categories (without DiffAugment: with it
    # the codes did not help, 63% confident against 64%); without DiffAugment, at 10,000 steps on seed 0, 74.8%
    # confident and KL 0.077 against 68.7% and 0.082 without codes; 20 categories a channel, as more categories
    # helped on mnist: 77.3% (its EMA 79.6%) against 74.8%, and the full command (with the EMA, two threads)
    # 73.2% against 69.8%; channel_codes, so that each code sets its own channel's digit (one code had set two
    # channels and another none): 81.8% at 7,200 steps (19 min 7 s), 1000 modes and KL 0.083, against 73.2% at
    # 10,000 (docs/sample-quality.md); so at least 7,200 steps there (18 epochs of 400), and a bare
    # `dcgan train --data stacked-mnist` is that run; nz 92: 32 continuous numbers, as on mnist
    ("stable", "stacked-mnist"): {"nz": 92, "info_codes": "20,20,20", "channel_codes": True, "min_steps": 7200},
}


def preset_options(name: str, data: Optional[str] = None) -> dict:
    """The TrainConfig fields of preset NAME for `data` (see PRESET_DATA_CHANGES), plus the name itself."""
    if name not in PRESETS:
        raise DcganError(f"unknown preset '{name}': use {', '.join(PRESETS)}")
    return {**PRESETS[name], **PRESET_DATA_CHANGES.get((name, data), {}), "preset": name}


# the latent and codes stable gives each data set it is the default on, read from the tables above so
# that the messages and the --help text follow the preset
_STABLE_BY_DATA = {data: preset_options("stable", data) for data, name in DATA_PRESETS.items() if name == "stable"}


def _as_flags(options: dict) -> str:
    """--nz and --info-codes, and every other option where a data set's stable differs from PRESETS["stable"]."""
    shown = [k for k, v in options.items() if k in ("nz", "info_codes") or (k != "preset" and v != PRESETS["stable"].get(k))]
    return " ".join(f"--{k.replace('_', '-')}" + ("" if options[k] is True else f" {options[k]}") for k in shown)


STABLE_CODES = ", ".join(f"on {data} {_as_flags(o)}" for data, o in _STABLE_BY_DATA.items())  # what differs by data set
INFO_OFF_HINT = (  # the codes' refusals' way out, as R1_OFF_HINT
    f"no codes: --info-codes 0; --preset stable, the default on {STABLE_BY_DEFAULT}, sets "
    + " and ".join(o["info_codes"] for o in _STABLE_BY_DATA.values())
)
