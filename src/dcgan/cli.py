"""The `dcgan` command: arguments -> config -> library calls. No training logic lives here.

User mistakes (DcganError, bad arguments) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import why_detach_cli
from .config import LOSSES, TrainConfig
from .errors import DcganError
from .presets import PRESETS, STABLE_BY_DEFAULT, STABLE_CODES, default_preset, preset_options

DEFAULTS = TrainConfig()
# FID help shared by `train --eval-fid` and `eval --fid`: the same Inception, weights file and cost
FID_WEIGHTS_HELP = (
    "Needs pytorch-fid's weights file pt_inception-2015-12-05-6726825d.pth, which you fetch yourself: see --inception-weights"
)
FID_COST_HELP = "Slow on a CPU: about 0.15 s an image measured on 2 cores (6 GFLOP at 299x299)"
INCEPTION_WEIGHTS_DEFAULT_HELP = (
    "(default: the pt_inception-2015-12-05-*.pth in $DCGAN_CACHE/inception/, else ~/.cache/dcgan/inception/)"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (plus where to look), still exit status 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a DCGAN",
        description="Train a DCGAN. With no arguments: the embedded MNIST digits at 32x32, about 5 minutes on 2 CPU cores. "
        f"A new run on {STABLE_BY_DEFAULT} that names no --preset starts from --preset stable (batch 64, "
        f"lr 4e-4, betas 0 and 0.99, --r1 1, at least {PRESETS['stable']['min_steps']:,} steps, --ema-decay 0.9954 --ema-rampup 0.1, "
        f"--truncation {PRESETS['stable']['truncation']:g} (the samples only), "
        f"and {STABLE_CODES}); the defaults below are those of other data "
        "and of --preset plain.",
        epilog="example: dcgan train --data img_align_celeba.zip --image-size 64 --channels 3 --epochs 5",
    )
    p.add_argument("--data", help=f"mnist, digits, fake, or a path: image folder, .zip, MNIST IDX folder, CIFAR-10 archive (default {DEFAULTS.data})")
    p.add_argument("--image-size", type=int, help="image side in pixels: 16, 32, 64, 128 or 256 (default: 32 for digit sets, 64 otherwise)")
    p.add_argument("--channels", type=int, help="1 (grayscale) or 3 (colour) (default: the data's own)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its newest checkpoint, with RUN's configuration")
    p.add_argument("--epochs", type=int, help=f"passes over the data (default: the tutorial's 5, more for small sets so a run has {DEFAULTS.min_steps} steps)")
    p.add_argument("--max-steps", type=int, help="total training steps of the run; overrides --epochs")
    p.add_argument("--min-steps", type=int, help=f"without --epochs: add epochs to the tutorial's 5 until the run has this many steps (default {DEFAULTS.min_steps})")
    p.add_argument("--batch-size", type=int, help=f"images per step; under torchrun, per process (default {DEFAULTS.batch_size})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default {DEFAULTS.lr})")
    p.add_argument("--beta1", type=float, help=f"Adam beta1 (default {DEFAULTS.beta1})")
    p.add_argument("--beta2", type=float, help=f"Adam beta2 (default {DEFAULTS.beta2})")
    p.add_argument("--nz", type=int, help=f"latent vector length (default {DEFAULTS.nz})")
    p.add_argument("--ngf", type=int, help="generator width (default: 64, the tutorial's, from 64x64 up; 32 below)")
    p.add_argument("--ndf", type=int, help="discriminator width (default: 64, the tutorial's, from 64x64 up; 32 below)")
    p.add_argument("--seed", type=int, help=f"seed for weights, data order and noise (default {DEFAULTS.seed})")
    p.add_argument("--out", help="run folder (default runs/<data>-<timestamp>); must be new or empty")
    p.add_argument("--cache-dir", help="decoded-image cache folder (default $DCGAN_CACHE or ~/.cache/dcgan)")
    p.add_argument("--log-every", type=int, help=f"steps between progress updates and stats.jsonl writes (default {DEFAULTS.log_every})")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="also save a checkpoint every N steps (default: at each epoch end only)")
    p.add_argument("--keep", type=int, help=f"periodic checkpoints kept besides final.pt (default {DEFAULTS.keep})")
    p.add_argument("--max-retries", type=int, help=f"rollbacks to the last good checkpoint after a divergence (default {DEFAULTS.max_retries})")
    p.add_argument("--init-g", help="start G from a checkpoint or a tutorial-layout netG .pth")
    p.add_argument("--init-d", help="start D from a checkpoint or a tutorial-layout netD .pth")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: this process's GPU when CUDA is available, else the CPU)")
    p.add_argument("--sync-bn", action="store_true", default=None, help="with several processes (torchrun): BatchNorm statistics over the global batch")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS", help=f"with several processes: how long one waits for the others before the job stops (default {DEFAULTS.dist_timeout:g})")
    p.add_argument("--ema-decay", type=float, metavar="D", help="keep an exponential moving average of G's weights (decay per step, below 1) and draw grids, samples, eval and exports from it; the D and G steps are unchanged (default: none; 0 drops the EMA a preset sets)")
    p.add_argument("--ema-rampup", type=float, metavar="R", help="with --ema-decay: lower the decay while the steps are few, so that the average's half-life is at most R x the steps so far and it soon forgets the untrained weights (StyleGAN2-ADA uses 0.05; default: none, the decay from the first step)")
    p.add_argument("--truncation", type=float, metavar="PSI", help=(
        "the truncation trick: draw the grids, samples and evaluations from z scaled by PSI, in (0, 1], nearer the centre "
        "of N(0, I), where G draws its cleanest images: below 1, cleaner and less varied images. Training's z is never "
        "scaled, so the weights do not depend on it; dcgan sample and dcgan eval use the run's value unless given "
        f"--truncation (default 1: no truncation; {PRESETS['stable']['truncation']:g} in --preset stable)"))  # fmt: skip
    s = p.add_argument_group("stabilisers", "Each is off by default, giving the tutorial's training; see README.md, Stabilisers.")
    s.add_argument("--loss", choices=LOSSES, help=(
        "the adversarial loss on D's output D(.) (a logit). bce (default, the tutorial's): the D step minimises "
        "-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), the G step -log sigmoid(D(G(z))). hinge: the D step minimises "
        "mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))), the G step -mean(D(G(z))). ls (least squares): the D step "
        "minimises 0.5 mean((D(x) - 1)^2) + 0.5 mean(D(G(z))^2), the G step 0.5 mean((D(G(z)) - 1)^2). "
        "The real_label/fake_label config keys apply to bce only"))  # fmt: skip
    s.add_argument("--spectral-norm", action="store_true", default=None, help=(
        "SN-GAN's discriminator: every conv weight of D is divided by its largest singular value (one power iteration "
        "at each of D's forward passes, in the D step and the G step) and D has no BatchNorm; so both steps train "
        "against that D. G is unchanged. A tutorial netD .pth does not fit it"))  # fmt: skip
    s.add_argument("--pack", type=int, metavar="K", help=(
        "PacGAN: D judges groups of K images stacked along the channels (its first conv takes K x channels) and gives "
        "one output per group; the D step groups the real batch and the fake batch, the G step the same fakes, and each "
        "loss averages over the groups. --batch-size must be a multiple of K (default 1: one image at a time)"))  # fmt: skip
    s.add_argument("--diffaug", metavar="POLICY", help=(
        "DiffAugment: augment every image D sees, with POLICY a comma-separated list of color, translation, cutout: "
        "the real batch and the detached fakes in the D step, and the fakes in the G step, where G's gradient flows "
        "back through the augmentation. New draws each time, from the stream --seed fixes (default: none)"))  # fmt: skip
    s.add_argument("--r1", type=float, metavar="GAMMA", help=(
        "R1 penalty: on the D steps chosen by --r1-every, D's loss gains GAMMA/2 x the mean over the real inputs x of D "
        "(images; groups with --pack) of ||grad_x D(x)||^2, times --r1-every; the G step is unchanged. Not with --compile "
        "(default 0: off)"))  # fmt: skip
    s.add_argument("--r1-every", type=int, metavar="N", help=f"lazy R1: --r1 on every N-th D step only, N times as strong (default {DEFAULTS.r1_every})")
    s.add_argument("--info-codes", metavar="K[,K...]", help=(
        "InfoGAN, no labels needed: the last K numbers of z (of --nz) pick one of K categories (their argmax), which G "
        "receives as a one-hot vector; several codes take consecutive groups. D gains a head that guesses the categories "
        "from its last features: the D step adds the code loss (cross-entropy of that guess) on the detached fakes, the "
        "G step the same loss on the same fakes through the fixed D, so each category becomes a kind of image. "
        "Not with --pack (default: none; 0 drops the codes a preset sets)"))  # fmt: skip
    s.add_argument("--info-weight", type=float, metavar="LAMBDA", help=f"weight of the code loss in both steps (default {DEFAULTS.info_weight:g})")
    s.add_argument("--channel-codes", action=argparse.BooleanOptionalAction, default=None, help=(
        "one code per image channel (--info-codes K,K,K for colour), for data whose channels are exchangeable, as "
        "stacked-mnist's: in both steps D's code head reads a second pass over the fakes with each one's channels "
        "shuffled, and guesses the codes in the same order, so code i comes to set channel i's image (without it a code "
        "may set two channels and another none); D's real-or-fake logits still come from the fakes as drawn. About a third "
        "more time a step. No effect without codes (default: off; on in --preset stable on stacked-mnist)"))  # fmt: skip
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="numeric precision (default auto: bf16 where the CPU or GPU multiplies bf16 natively, else fp32)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None, help="keep the NCHW memory layout (default: channels_last, faster)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile each network (a minute of compiling first; then faster steps)")
    p.add_argument("--check-isolation", type=int, metavar="N", help="every N steps, verify that the D step left G's weights and gradients untouched and the G step left D's weights; stop if not")
    p.add_argument("--tensorboard", action="store_true", default=None, help="also log figures, sample grids and weight histograms to RUN/tb/ (needs tensorboard)")
    p.add_argument("--eval-every", type=int, metavar="K", help="every K epochs and at the end, score the samples as dcgan eval does (rows in stats.jsonl and eval.jsonl) and keep checkpoints/best.pt")
    p.add_argument("--eval-n", type=int, metavar="N", help="samples per evaluation during training (default 2,000; 5,000 for stacked-mnist)")
    p.add_argument("--best-metric", metavar="NAME", help="the metric that picks best.pt: confident, classes_present, modes (stacked-mnist) (higher is better), kl_uniform, or with --eval-fid fid and kid (lower is better) (default: confident; kl_uniform for stacked-mnist; fid for colour data)")
    p.add_argument(
        "--eval-fid", action="store_true", default=None,
        help="add FID and KID to every evaluation (needs --eval-every; the only metric of colour data): the --eval-n "
        "samples of each evaluation go through InceptionV3, and once, before training starts, up to as many training "
        "images (their features are cached for later runs). "
        f"{FID_WEIGHTS_HELP}. {FID_COST_HELP}, so the default 2,000 samples add about 5 minutes to each evaluation "
        "(Inception runs on the training device: far less on a GPU); evaluate less often, or lower --eval-n",
    )  # fmt: skip
    p.add_argument("--inception-weights", metavar="PATH", help=f"that weights file (implies --eval-fid) {INCEPTION_WEIGHTS_DEFAULT_HELP}")
    p.add_argument(
        "--preset", choices=tuple(PRESETS),
        help="start from a named set of options: tutorial (the PyTorch DCGAN tutorial exactly: 64x64, widths 64, 5 epochs, fp32), "
        "stable (the best settings measured; see the README) or plain (the defaults: the tutorial's hyperparameters at the "
        f"data's natural size); --config and flags override it (default: stable for {STABLE_BY_DEFAULT}, plain otherwise)",
    )  # fmt: skip
    p.add_argument("--config", metavar="FILE", help="a TOML file of options (keys: the option names, or TrainConfig fields); flags given here override it")
    p.add_argument("--print-config", nargs="?", const="toml", choices=("toml", "json"), help="print the resolved configuration (default TOML, loadable by --config) and exit")


def _eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a run's samples offline: the digit classifier, and FID/KID with --fid",
        description="Score a run's newest generator (or with --best its best.pt): digit class coverage and confidence (grayscale digit runs), "
        "or modes out of 1000 and KL to uniform (stacked-mnist runs); with --fid also FID and KID against the run's "
        "training images (any run, colour ones too). Appends to RUN/eval.jsonl.",
        epilog="example: dcgan eval --run runs/mnist-20261130-120000 --n 10000",
    )
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--n", type=int, help="samples to score (default 10,000; 26,000 for stacked-mnist, the papers' protocol)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument(
        "--fid", action="store_true",
        help="also FID and KID on Inception pool features, against up to N of the run's training images (the only metric "
        f"of colour runs). {FID_WEIGHTS_HELP}. {FID_COST_HELP}",
    )  # fmt: skip
    p.add_argument(
        "--inception-weights", metavar="PATH",
        help=f"that weights file (implies --fid) {INCEPTION_WEIGHTS_DEFAULT_HELP}",
    )  # fmt: skip
    p.add_argument("--device", help="where the generator and Inception run: cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--best", action="store_true", help="score checkpoints/best.pt, the best evaluation of a run trained with --eval-every, instead of the newest checkpoint")
    p.add_argument("--checkpoint", metavar="FILE", help="score this checkpoint of the run instead of the newest, such as RUN/checkpoints/step_00007200.pt (the row names it)")
    p.add_argument("--truncation", type=float, metavar="PSI", help="draw the samples from z scaled by PSI, in (0, 1] (default: the run's --truncation; 1 scores everything G draws)")


def _sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="draw images from a trained generator",
        description="Draw images from a run's newest checkpoint, a given checkpoint, or a tutorial netG .pth.",
        epilog="example: dcgan sample --run runs/mnist-20261130-120000 --n 64 --out grid.png",
    )
    p.add_argument("--run", help="run folder (its checkpoints/final.pt, else the newest checkpoint)")
    p.add_argument("--checkpoint", help="a checkpoint file, or a weights-only netG .pth from the PyTorch tutorial, or a dcgan export .safetensors")
    p.add_argument("--best", action="store_true", help="with --run: its checkpoints/best.pt, the best evaluation of a run trained with --eval-every")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", required=True, help="a .png (one grid), a .npz (uint8 array), or a folder (one PNG each)")
    p.add_argument("--format", choices=("png", "npz"), help="png or npz (default: from --out)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives the same images (default 0)")
    p.add_argument(
        "--interpolate", type=int, metavar="K",
        help="instead: --n rows of K images walking (slerp) from the latent of seed+i to seed+i+1; --out FILE.png, plus FILE.gif",
    )  # fmt: skip
    p.add_argument("--code", metavar="C[,C...]", help=(
        "a generator trained with --info-codes: draw every image in these categories, one per code, counted from 0 "
        "(the rest of the noise as --seed draws it)"))  # fmt: skip
    p.add_argument("--truncation", type=float, metavar="PSI", help="draw from z scaled by PSI, in (0, 1]: below 1, cleaner and less varied images (default: the run's --truncation, else 1)")


def _export_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write the generator alone as ONNX, TorchScript or safetensors",
        description=(
            "Export a trained generator (eval mode: BatchNorm's running statistics) for use without this package. "
            "It maps z (B, nz, 1, 1) to images (B, C, S, S) in [-1, 1]; to draw as a run set up with --truncation PSI "
            "does, scale z by PSI (config.json's truncation) before the call."
        ),
        epilog="example: dcgan export --run runs/mnist-20261130-120000 --format onnx --out generator.onnx",
    )
    p.add_argument("--run", help="run folder (its newest checkpoint)")
    p.add_argument("--checkpoint", help="a checkpoint file, or a weights-only netG .pth from the PyTorch tutorial")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"), help="onnx (needs onnx, onnxscript), torchscript, or safetensors (needs safetensors)")
    p.add_argument("--out", required=True, help="the file to write")


def _report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write RUN/report.html, one self-contained page about a run",
        description=(
            "Write RUN/report.html: configuration, timing, loss plot, the fixed-noise grid of each epoch (slider), "
            "real vs fake and any evaluation metrics, in one file that works offline."
        ),
        epilog="example: dcgan report runs/mnist-20261130-120000",
    )
    p.add_argument("run", metavar="RUN", help="the run folder")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="dcgan", description="Train DCGANs with PyTorch, and sample from them.")
    parser.add_argument("--version", action="version", version=f"dcgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _train_parser(sub)
    _sample_parser(sub)
    _eval_parser(sub)
    _export_parser(sub)
    _report_parser(sub)
    why_detach_cli.add_parser(sub)
    return parser


_TRAIN_FIELDS = (
    "preset", "data", "image_size", "channels", "epochs", "max_steps", "min_steps", "batch_size", "lr", "beta1", "beta2", "nz", "ngf", "ndf",
    "seed", "out", "cache_dir", "log_every", "checkpoint_every", "keep", "max_retries", "init_g", "init_d", "progress",
    "tensorboard", "device", "sync_bn", "dist_timeout", "check_isolation", "precision", "channels_last", "compile", "ema_decay", "ema_rampup",
    "truncation", "eval_every", "eval_n", "best_metric", "eval_fid", "inception_weights",
    "loss", "spectral_norm", "pack", "diffaug", "r1", "r1_every", "info_codes", "info_weight", "channel_codes",
)  # fmt: skip


def given_train_options(args: argparse.Namespace) -> dict:
    """Only the flags that were given, so that defaults never hide the values of a --config file."""
    return {name: getattr(args, name) for name in _TRAIN_FIELDS if getattr(args, name) is not None}


def train_options(args: argparse.Namespace) -> dict:
    """A --preset's values, overridden by the --config file's, overridden by the flags given.

    A new run that names no preset starts from its data's (presets.default_preset: stable for the
    embedded digits); a resumed run takes its whole configuration from its checkpoint.
    """
    from .config_file import load_config_file

    from_file = load_config_file(Path(args.config)) if args.config else {}
    given = given_train_options(args)
    preset = given.get("preset", from_file.get("preset"))
    data = given.get("data", from_file.get("data", DEFAULTS.data))
    if preset is None and not args.resume:
        preset = default_preset(data)
    return {**(preset_options(preset, data) if preset else {}), **from_file, **given}


def _train(args: argparse.Namespace) -> int:
    from . import distributed
    from .train import Trainer, TrainingInterrupted

    options = train_options(args)
    if args.print_config:
        from .config_file import format_config

        if args.resume:
            raise DcganError(f"--print-config shows a new run's configuration; a resumed run's is {Path(args.resume) / 'config.json'}")
        print(format_config(TrainConfig(**options), args.print_config))
        return 0
    processes = distributed.Processes(rank=0, world_size=1, local_rank=0)
    try:
        # under torchrun: join the job's other processes (nothing happens for a single process)
        with distributed.process_group(options.get("dist_timeout", DEFAULTS.dist_timeout)) as processes:
            if args.resume:
                trainer = Trainer.resume(Path(args.resume), **options)
            else:
                trainer = Trainer(TrainConfig(**options))
            trainer.fit()
    except TrainingInterrupted as stop:
        if processes.is_main:  # every rank stopped at the same step; one says so
            print(f"dcgan: {stop}", file=sys.stderr)
        return stop.exit_status
    return 0


def _best_checkpoint(run: Path) -> Path:
    """RUN/checkpoints/best.pt (`--best` of sample and eval), or one line saying why there is none."""
    from .checkpoint import BEST_NAME

    path = run / "checkpoints" / BEST_NAME
    if not run.is_dir():
        raise DcganError(f"run folder not found: {run}")
    if not path.is_file():
        raise DcganError(f"no {path}: only runs trained with --eval-every keep a best checkpoint")
    return path


def _sample(args: argparse.Namespace) -> int:
    from .sample import generate, latent, load_generator, sampling_truncation, save_samples, truncate

    if args.n < 1:
        raise DcganError(f"--n must be at least 1, not {args.n}")
    if args.best:
        if not args.run or args.checkpoint:
            raise DcganError("--best picks a run's checkpoints/best.pt: give --run RUN, and no --checkpoint")
        args.checkpoint = str(_best_checkpoint(Path(args.run)))
    run, checkpoint = Path(args.run) if args.run else None, Path(args.checkpoint) if args.checkpoint else None
    generator = load_generator(run, checkpoint)
    truncation = sampling_truncation(run, checkpoint) if args.truncation is None else args.truncation  # truncate() checks it
    if args.interpolate is not None:
        from .sample import interpolation_latents, save_interpolation

        if args.interpolate < 2:
            raise DcganError(f"--interpolate needs at least 2 steps (the two ends), not {args.interpolate}")
        if args.format == "npz":
            raise DcganError("--interpolate writes a .png grid and a .gif; --format npz does not apply")
        z = interpolation_latents(args.n, args.interpolate, generator.config.nz, args.seed)
        z = _with_code(truncate(z, truncation), generator, args.code)
        print(save_interpolation(generate(generator, z), args.interpolate, Path(args.out)))
        return 0
    z = truncate(latent(args.n, generator.config.nz, args.seed), truncation)
    images = generate(generator, _with_code(z, generator, args.code))
    print(save_samples(images, Path(args.out), args.format))
    return 0


def _with_code(z, generator, code: Optional[str]):
    """z as drawn, or with --code's categories set."""
    if code is None:
        return z
    from .sample import with_categories

    parts = [part.strip() for part in code.split(",")]
    if not all(part.isdigit() for part in parts):
        raise DcganError(f"--code '{code}' must be categories counted from 0, comma-separated: 3 or 3,0,7")
    return with_categories(z, generator.config.info_codes, [int(part) for part in parts])


def _export(args: argparse.Namespace) -> int:
    from .export import export_generator
    from .sample import load_generator

    generator = load_generator(Path(args.run) if args.run else None, Path(args.checkpoint) if args.checkpoint else None)
    print(export_generator(generator, args.format, Path(args.out)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"report written to {write_report(Path(args.run))}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .config import check_truncation
    from .distributed import current, resolve_device
    from .evaluate import evaluate_run
    from .metrics import summary_line

    if args.n is not None and args.n < 2:
        raise DcganError(f"--n must be at least 2, not {args.n}")
    weights = Path(args.inception_weights) if args.inception_weights else None
    device = resolve_device(args.device or "cpu", current())
    fid = args.fid or weights is not None
    if args.best and args.checkpoint:
        raise DcganError("--best and --checkpoint each name the checkpoint to score: give one")
    if args.truncation is not None:  # truncate() checks it too, but only after the generator, classifier and Inception load
        check_truncation(args.truncation)
    checkpoint = _best_checkpoint(Path(args.run)) if args.best else Path(args.checkpoint) if args.checkpoint else None
    result = evaluate_run(
        Path(args.run), args.n, args.seed, fid=fid, inception_weights=weights, device=device, checkpoint=checkpoint,
        truncation=args.truncation,
    )  # fmt: skip
    print((f"{checkpoint.name}: " if checkpoint else "") + summary_line(result))
    print(f"appended to {Path(args.run) / 'eval.jsonl'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handlers = {"train": _train, "sample": _sample, "eval": _eval, "export": _export, "report": _report, "why-detach": why_detach_cli.run}
        return handlers[args.command](args)
    except DcganError as error:
        print(f"dcgan: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dcgan: interrupted", file=sys.stderr)
        return 130
