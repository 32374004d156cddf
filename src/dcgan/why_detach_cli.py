"""`dcgan why-detach`: arguments -> ModelConfig -> why_detach.compare_strategies -> a table or JSON.

Wired into the `dcgan` command by cli.py (`add_parser(sub)`, and `run` as the subcommand's handler).
Torch is imported only when the command runs, so `dcgan --help` stays quick.
"""

from __future__ import annotations

import argparse
import json

from .config import ModelConfig
from .errors import DcganError

DEFAULTS = ModelConfig()
STRATEGY_NAMES = "detach, no-detach, retain-graph, regenerate, freeze-d"  # listed for --help; why_detach checks them


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "why-detach",
        help="measure why the D step uses fake.detach()",
        description=(
            "Run one training iteration under each gradient-flow strategy (detach, no-detach, retain-graph, "
            "regenerate, freeze-d) from the same weights, data and noise, and report what each one does."
        ),
        epilog="example: dcgan why-detach --image-size 64 --channels 3 --batch-size 128 --json",
    )
    p.add_argument("--image-size", type=int, default=32, help="image side in pixels: 16, 32, 64, 128 or 256 (default 32)")
    p.add_argument("--channels", type=int, default=1, help="1 (grayscale) or 3 (colour) (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--nz", type=int, default=DEFAULTS.nz, help=f"latent vector length (default {DEFAULTS.nz})")
    p.add_argument("--ngf", type=int, default=DEFAULTS.ngf, help=f"generator width (default {DEFAULTS.ngf})")
    p.add_argument("--ndf", type=int, default=DEFAULTS.ndf, help=f"discriminator width (default {DEFAULTS.ndf})")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights, the random real batch and the noise (default 0)")
    p.add_argument("--repeats", type=int, default=5, help="timed iterations per strategy; the median is reported (default 5)")
    p.add_argument("--strategies", default=None, help=f"comma-separated subset of: {STRATEGY_NAMES} (default all)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per strategy, instead of a table")
    return p


def parse_strategy_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise DcganError(f"--strategies is empty: give a comma-separated list of {STRATEGY_NAMES}")
    return names


def describe(args: argparse.Namespace) -> str:
    """One line naming the configuration, printed above the table."""
    return (
        f"model {args.image_size}x{args.image_size}x{args.channels}, nz {args.nz}, ngf {args.ngf}, ndf {args.ndf}; "
        f"batch {args.batch_size}; seed {args.seed}; ms/step is the median of {args.repeats} timed iterations"
    )


def run(args: argparse.Namespace) -> int:
    from .why_detach import STRATEGIES, compare_strategies, format_table

    model_config = ModelConfig(image_size=args.image_size, channels=args.channels, nz=args.nz, ngf=args.ngf, ndf=args.ndf)
    strategies = STRATEGIES if args.strategies is None else parse_strategy_list(args.strategies)
    rows = compare_strategies(model_config, args.batch_size, seed=args.seed, repeats=args.repeats, strategies=strategies)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(describe(args))
        print(format_table(rows))
    return 0
