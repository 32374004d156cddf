"""Typed configuration: every default of the toolkit lives here, each with its meaning.

Two frozen dataclasses:
- `ModelConfig` is all a Generator/Discriminator pair needs to be rebuilt (it travels in checkpoints);
- `TrainConfig` is a whole training run (data, model, optimisation, cadence, outputs).
The defaults are the PyTorch DCGAN tutorial's, except where a comment says otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass
from typing import Any, Optional

from .errors import DcganError
from .presets import INFO_OFF_HINT, R1_OFF_HINT

MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 256
VALID_IMAGE_SIZES = tuple(2**k for k in range(4, 9))  # 16, 32, 64, 128, 256


def check_image_size(size: int) -> None:
    if size not in VALID_IMAGE_SIZES:
        valid = ", ".join(str(s) for s in VALID_IMAGE_SIZES)
        raise DcganError(f"image size {size} is not supported: choose one of {valid}")


LOSSES = ("bce", "hinge", "ls")  # the adversarial losses of losses.py
DIFFAUG_POLICIES = ("color", "translation", "cutout")  # the DiffAugment operations of augment.py


def parse_diffaug(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); one line naming an unknown or repeated part."""
    names = tuple(part.strip() for part in policy.split(","))
    for name in names:
        if name not in DIFFAUG_POLICIES:
            raise DcganError(f"unknown DiffAugment policy '{name}': use a comma-separated list of {', '.join(DIFFAUG_POLICIES)}")
    if len(set(names)) != len(names):
        raise DcganError(f"DiffAugment policy '{policy}' names an augmentation twice")
    return names


def parse_info_codes(spec: str) -> tuple[int, ...]:
    """'10' -> (10,), '10,10,10' -> (10, 10, 10): the number of categories of each InfoGAN code; '0': none."""
    if str(spec).strip() == "0":  # off, as --r1 0 is: the way to drop the codes a preset sets
        return ()
    parts = [part.strip() for part in str(spec).split(",")]
    if not all(part.isdigit() and int(part) >= 2 for part in parts):
        raise DcganError(f"info_codes '{spec}' must be category counts of at least 2, comma-separated: 10 or 10,10,10")
    return tuple(int(part) for part in parts)


def check_info_codes(info_codes: tuple[int, ...], nz: int, pack: int) -> None:
    if sum(info_codes) >= nz:
        raise DcganError(
            f"info codes {','.join(map(str, info_codes))} take the last {sum(info_codes)} numbers of z, so nz ({nz}) must be larger: "
            f"at least one number must stay continuous ({INFO_OFF_HINT})"
        )
    if pack > 1:
        raise DcganError(f"info codes need one D output per image, and pack gives one per group: use one or the other ({INFO_OFF_HINT})")


def check_channel_codes(info_codes: tuple[int, ...], channels: int) -> None:
    """--channel-codes shuffles the channels with their codes: one code per channel, all of one category count."""
    if info_codes and (len(info_codes) != channels or len(set(info_codes)) != 1):
        raise DcganError(
            f"channel_codes gives each of the {channels} image channel(s) one code and shuffles them together, so it needs "
            f"{channels} code(s) of one category count ({','.join(['10'] * channels)}), not {','.join(map(str, info_codes))}: "
            "change --info-codes, or drop --channel-codes (--no-channel-codes)"
        )


def check_truncation(truncation: float) -> None:
    if not 0 < truncation <= 1:  # NaN fails too
        raise DcganError(f"truncation must lie in (0, 1]: 1 draws z as trained, below 1 nearer its centre; not {truncation}")


def check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise DcganError(f"channels must be 1 (grayscale) or 3 (colour), not {channels}")


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 64  # side of the square images in pixels; a power of two from 16 to 256
    channels: int = 3  # image channels: 1 grayscale, 3 colour
    nz: int = 100  # length of the latent vector z fed to the generator
    ngf: int = 64  # generator feature maps in its last hidden layer (scaled up towards the input)
    ndf: int = 64  # discriminator feature maps in its first layer (scaled up towards the output)
    max_mult: int = 8  # cap on the feature-map multiplier; the tutorial reaches 8 at 64x64
    spectral_norm: bool = False  # D: spectral norm on every conv, no BatchNorm (SN-GAN); False: the tutorial's D
    pack: int = 1  # D judges this many images at once, stacked along the channels (PacGAN); 1: one at a time
    info_codes: tuple[int, ...] = ()  # InfoGAN: categories of each code, taken from z's last numbers; (): none

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        check_channels(self.channels)
        for name in ("nz", "ngf", "ndf", "max_mult", "pack"):
            if getattr(self, name) < 1:
                raise DcganError(f"{name} must be a positive integer, not {getattr(self, name)}")
        object.__setattr__(self, "info_codes", tuple(self.info_codes))  # a list when read back from JSON
        if self.info_codes:
            check_info_codes(self.info_codes, self.nz, self.pack)


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: str = "mnist"  # a built-in source (mnist, digits, fake) or a path: folder, .zip, IDX folder/file, CIFAR-10
    image_size: Optional[int] = None  # None: the source's natural size (32 for digit sets, 64 otherwise)
    channels: Optional[int] = None  # None: the source's own (1 for digit sets, 3 for photos); 1 or 3 converts
    cache_dir: Optional[str] = None  # decoded-image cache folder; None: $DCGAN_CACHE or ~/.cache/dcgan
    preset: Optional[str] = None  # the named bundle of settings (presets.py) the other fields started from; informational
    # model
    nz: int = 100  # latent vector length
    ngf: Optional[int] = None  # generator width; None: 64 (the tutorial's) from 64x64 up, 32 below
    ndf: Optional[int] = None  # discriminator width; None: 64 (the tutorial's) from 64x64 up, 32 below
    # optimisation
    batch_size: int = 128  # images per training step
    epochs: Optional[int] = None  # passes over the data; None: the tutorial's 5, more for small sets (see min_steps)
    min_steps: int = 1200  # with epochs None: add epochs until the run has this many steps (31 for the 5,000 digits)
    max_steps: Optional[int] = None  # when set, the run's total number of steps; it overrides epochs
    lr: float = 2e-4  # Adam learning rate for both networks
    beta1: float = 0.5  # Adam beta1 (the tutorial lowers it from 0.9 for stability)
    beta2: float = 0.999  # Adam beta2
    real_label: float = 1.0  # BCE target for real images (and for fakes in the G step); bce loss only
    fake_label: float = 0.0  # BCE target for fakes in the D step; bce loss only
    # stabilisers (losses.py, augment.py, models.py); the defaults are the tutorial's training
    loss: str = "bce"  # adversarial loss: bce (the tutorial's non-saturating BCE), hinge, or ls (least squares)
    spectral_norm: bool = False  # spectral norm on D's convs, and no BatchNorm in D (SN-GAN)
    pack: int = 1  # D judges groups of this many images stacked along the channels (PacGAN); divides batch_size
    diffaug: Optional[str] = None  # DiffAugment policy for every image D sees: comma-separated color, translation, cutout
    r1: float = 0.0  # R1 penalty weight gamma: gamma/2 E||grad_x D(x)||^2 on real x in the D step; 0: off
    r1_every: int = 16  # lazy R1: apply it on every N-th D step only, N times as strong (StyleGAN2)
    info_codes: Optional[str] = None  # InfoGAN categorical codes, e.g. "10" or "10,10,10": z's last numbers pick them
    info_weight: float = 1.0  # InfoGAN's lambda: weight of the code loss in the D step and in the G step
    channel_codes: bool = False  # code i sets channel i: D's head reads the fakes' channels and codes shuffled together; no effect without codes
    drop_last: bool = True  # drop the last short batch of an epoch so every step sees batch_size images
    init_g: Optional[str] = None  # warm start G from a checkpoint or a tutorial-layout netG .pth
    init_d: Optional[str] = None  # warm start D from a checkpoint or a tutorial-layout netD .pth
    # reproducibility and outputs
    seed: int = 0  # seeds weights, data order and noise; the same seed gives the same run on CPU
    out: Optional[str] = None  # run folder; None: runs/<data>-<timestamp>
    n_fixed: int = 64  # fixed noise vectors drawn once, rendered as the progress grid
    # the truncation trick (StyleGAN's psi applied to z, whose mean is 0): grids, samples and evaluations are
    # drawn from z scaled by this, nearer the centre of N(0, I), where G draws its cleanest images; below 1 it
    # trades variety for clean images; training's z is never scaled, so the weights do not depend on it
    truncation: float = 1.0
    log_every: int = 10  # steps between host reads of the figures (stats.jsonl rows and progress bar)
    checkpoint_every: Optional[int] = None  # steps between checkpoints, besides one at each epoch end
    keep: int = 3  # periodic checkpoints kept besides final.pt
    progress: bool = True  # show a progress bar on the console
    tensorboard: bool = False  # also write figures, fixed-noise grids and weight histograms to RUN/tb/ (needs tensorboard)
    # evaluation during training (evaluate.py): the `dcgan eval` metrics of the sampling generator, and checkpoints/best.pt
    eval_every: Optional[int] = None  # epochs between evaluations, plus one at the end of the run; None: no evaluation
    eval_n: Optional[int] = None  # samples per evaluation; None: 2,000 (digits, colour with eval_fid), 5,000 for stacked-mnist
    best_metric: Optional[str] = None  # picks best.pt; None: confident (digits), kl_uniform (stacked-mnist), fid (colour runs)
    eval_fid: bool = False  # add FID and KID to every evaluation (InceptionV3 on every sample: about 0.15 s an image on a CPU)
    inception_weights: Optional[str] = None  # pytorch-fid's weights file (implies eval_fid); None: $DCGAN_CACHE/inception/'s
    # divergence guard: roll back to the last good checkpoint and retry with a new data order
    max_retries: int = 3  # rollbacks allowed before the run stops
    collapse_threshold: float = 1e-4  # D(G(z)) below this counts as a collapsed discriminator step
    collapse_steps: int = 500  # that many collapsed steps in a row count as divergence; 0 disables
    # devices and several processes (torchrun); batch_size is then each process's share of a step
    device: Optional[str] = None  # cpu, cuda or cuda:N; None: this process's GPU (cuda:LOCAL_RANK) if CUDA is there, else cpu
    sync_bn: bool = False  # with several processes: BatchNorm statistics over the global batch, not each process's share
    dist_timeout: float = 600.0  # seconds a process waits for the others in a collective before the job stops
    ema_decay: Optional[float] = None  # keep an EMA of G's weights (decay per step) for grids, samples, eval and export; 0: none
    # EMA ramp-up (StyleGAN2-ADA's ema_rampup): the average's half-life is at most this fraction of the steps so far,
    # so that early on it forgets the untrained weights quickly; None: the decay from the first step
    ema_rampup: Optional[float] = None
    # speed (see precision.py for the measurements behind the defaults)
    precision: str = "auto"  # fp32, bf16, fp16 (autocast; fp16 with a GradScaler) or auto: bf16 where the hardware has it
    channels_last: bool = True  # NHWC memory layout: faster convolutions (1.2x measured on CPU at 64x64)
    compile: bool = False  # torch.compile each network; faster steps after a compile of a minute or so
    check_isolation: Optional[int] = None  # every N steps, verify the D step left G untouched and the G step left D's weights

    def __post_init__(self) -> None:
        # an int where a float is meant (TrainConfig(beta1=0)) would reach torch as is, and Adam refuses
        # betas of mixed types with a traceback; 0 and 0.0 mean the same setting, so store the float
        for name, kind in field_types().items():
            value = getattr(self, name)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))  # frozen: the dataclass way to set a field
        if self.image_size is not None:
            check_image_size(self.image_size)
        if self.channels is not None:
            check_channels(self.channels)
        positive = ("nz", "ngf", "ndf", "batch_size", "epochs", "max_steps", "n_fixed", "log_every", "checkpoint_every",
                    "check_isolation", "pack", "r1_every")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DcganError(f"{name} must be at least 1, not {value}")
        for name in ("keep", "max_retries", "collapse_steps", "min_steps"):
            if getattr(self, name) < 0:
                raise DcganError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if self.eval_every is not None and self.eval_every < 1:
            raise DcganError(f"eval_every must be at least 1 (epochs), not {self.eval_every}")
        if self.eval_n is not None and self.eval_n < 2:
            raise DcganError(f"eval_n must be at least 2 samples, not {self.eval_n}")
        if self.eval_every is None and (self.eval_n is not None or self.best_metric is not None):
            raise DcganError("eval_n and best_metric set how evaluation during training works: add eval_every (--eval-every K)")
        if self.eval_every is None and (self.eval_fid or self.inception_weights is not None):
            raise DcganError(
                "eval_fid and inception_weights add FID and KID to evaluation during training: add eval_every (--eval-every K)"
            )
        check_truncation(self.truncation)
        if not self.lr > 0:
            raise DcganError(f"lr must be positive, not {self.lr}")
        self._check_stabilisers()
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:  # 0: no EMA, as --r1 0 is no R1
            raise DcganError(f"ema_decay must lie between 0 (no EMA) and 1, not {self.ema_decay}")
        if self.ema_rampup is not None and not 0 < self.ema_rampup < float("inf"):
            raise DcganError(f"ema_rampup must be a positive number, not {self.ema_rampup}")
        if self.ema_rampup is not None and self.ema_decay is None:
            raise DcganError("ema_rampup shapes the EMA of G: it needs ema_decay too")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise DcganError(f"unknown precision '{self.precision}': use auto, fp32, bf16 or fp16")
        if not self.dist_timeout > 0:
            raise DcganError(f"dist_timeout must be a positive number of seconds, not {self.dist_timeout}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise DcganError("Adam betas must lie in [0, 1)")

    def _check_stabilisers(self) -> None:
        if self.loss not in LOSSES:
            raise DcganError(f"unknown loss '{self.loss}': use {', '.join(LOSSES)}")
        if self.batch_size % self.pack:
            raise DcganError(f"batch_size {self.batch_size} is not a multiple of pack {self.pack}: D judges groups of pack images")
        if self.pack > 1 and not self.drop_last:
            raise DcganError("pack needs drop_last: a short last batch might not split into groups of pack images")
        if self.diffaug is not None:
            parse_diffaug(self.diffaug)
        if not 0 <= self.r1 < float("inf"):
            raise DcganError(f"r1 (gamma) must be 0 (off) or a positive number, not {self.r1}")
        codes = parse_info_codes(self.info_codes) if self.info_codes is not None else ()
        if codes:
            check_info_codes(codes, self.nz, self.pack)
        if not 0 < self.info_weight < float("inf"):
            raise DcganError(f"info_weight must be a positive number, not {self.info_weight}")
        if self.r1 and self.compile:  # R1 differentiates a gradient, which torch.compile cannot (double backward)
            raise DcganError(f"r1 needs the gradient of a gradient, which torch.compile does not support: drop compile, or r1 ({R1_OFF_HINT})")

    def model(self) -> ModelConfig:
        """The architecture; call after image_size, channels and the widths are resolved."""
        if None in (self.image_size, self.channels, self.ngf, self.ndf):
            raise ValueError("resolve image_size, channels, ngf and ndf before building the model")
        return ModelConfig(
            self.image_size, self.channels, self.nz, self.ngf, self.ndf, spectral_norm=self.spectral_norm, pack=self.pack,
            info_codes=parse_info_codes(self.info_codes) if self.info_codes is not None else (),
        )  # fmt: skip

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DcganError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@functools.lru_cache(maxsize=1)
def field_types() -> dict[str, type]:
    """Each TrainConfig field's value type, with Optional[...] unwrapped: {"lr": float, "ngf": int, ...}."""
    types = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        types[name] = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    return types
