"""Write docs/why-detach.md: the tutorial's gradient-flow lesson, with numbers measured by `dcgan why-detach`.

    python docs/make_why_detach.py                      # the tutorial's size: 64x64x3, batch 128
    python docs/make_why_detach.py --image-size 32 --channels 1 --batch-size 64   # about a minute on 2 cores

The table and every number in the prose come from one `compare_strategies` run made here; the page
names the command that produced it, so it can be regenerated rather than edited.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

from dcgan.config import ModelConfig
from dcgan.why_detach import compare_strategies, format_table

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    defaults = ModelConfig()
    p = argparse.ArgumentParser(description="Measure the detach strategies and write docs/why-detach.md.")
    p.add_argument("--image-size", type=int, default=defaults.image_size, help=f"default {defaults.image_size}, the tutorial's")
    p.add_argument("--channels", type=int, default=defaults.channels, help=f"default {defaults.channels}")
    p.add_argument("--batch-size", type=int, default=128, help="default 128, the tutorial's")
    p.add_argument("--nz", type=int, default=defaults.nz)
    p.add_argument("--ngf", type=int, default=defaults.ngf)
    p.add_argument("--ndf", type=int, default=defaults.ndf)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="timed iterations per strategy (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--out", type=Path, default=HERE / "why-detach.md")
    return p.parse_args(argv)


def cli_equivalent(args: argparse.Namespace) -> str:
    return (
        f"dcgan why-detach --image-size {args.image_size} --channels {args.channels} --batch-size {args.batch_size} "
        f"--nz {args.nz} --ngf {args.ngf} --ndf {args.ndf} --seed {args.seed} --repeats {args.repeats}"
    )


def kib(value: int) -> str:
    return f"{value / 1024:,.0f} KiB"


def machine_line() -> str:
    """What the timings were measured on, including how busy the CPU already was."""
    load = f", 1-minute load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else ""
    threads = f"torch using {torch.get_num_threads()} thread(s) on {os.cpu_count()} CPUs"
    return f"torch {torch.__version__}, {threads}{load}, Python {platform.python_version()}"


def update_verdict(row: dict) -> str:
    """The measured comparison with detach, in words, so the prose cannot contradict the table."""
    same = "the same update as detach" if row["same_update_as_detach"] else "a different update from detach"
    return f"{same} (max |diff| {row['max_abs_diff_vs_detach']:.3g})"


def render(rows: list[dict], args: argparse.Namespace, command: str, machine: str) -> str:
    by = {row["strategy"]: row for row in rows}
    detach, failed, retained = by["detach"], by["no-detach"], by["retain-graph"]
    regenerated, frozen = by["regenerate"], by["freeze-d"]
    ms = {name: "-" if row["ms_per_step"] is None else f"{row['ms_per_step']:.1f} ms" for name, row in by.items()}
    g_activations = detach["d_step_saved_tensor_bytes"] - regenerated["d_step_saved_tensor_bytes"]
    momentum = torch.nn.BatchNorm2d(1).momentum  # the models' BatchNorm layers keep PyTorch's default
    effective_momentum = 1 - (1 - momentum) ** regenerated["g_bn_updates"]  # n updates with the same batch statistics
    return f"""# Why `D(fake.detach())`? The tutorial's gradient-flow lesson, measured

The PyTorch DCGAN tutorial generates `fake = G(z)` once per iteration. The D step scores
`D(fake.detach())`; the G step then scores the *same* `fake` with the updated D and backpropagates
into G. This page runs one real training iteration five ways, from identical weights, real batch
and noise, and reports what each way does. Nothing below is typed in by hand: the table and the
numbers in the text come from one run of

```bash
{command}
```

({machine}.) The same measurement prints as a table with
`{cli_equivalent(args)}`, or as JSON with `--json`.
The real images are random values in [-1, 1] drawn from the seed: the lesson is about where
gradients flow, which does not depend on what the pictures show.

{format_table(rows, markdown=True)}

Columns:

- `G |grad| after D step`: the sum of |grad| over G's parameters right after the D step. G's
  gradients are cleared before the iteration, so this is what the D step alone put there.
- `D changed in G step`: whether any D *parameter* moved during the G step.
- `same update as detach`, `max |diff| vs detach`: every final G and D parameter compared with the
  `detach` run; the same update means no difference above 1e-6.
- `G BN updates`, `D BN updates`: how many times each network's BatchNorm running statistics moved
  (buffers, not parameters).
- `saved tensors KiB`: the peak size of what autograd held for backward during the iteration, each
  storage counted once and parameters left out, measured with `torch.autograd.graph.saved_tensors_hooks`;
  `D step KiB` is the same peak during the D step only.
- `ms/step`: the median of {args.repeats} timed iterations, each from the same starting state. Timings on a
  shared CPU are noisy; read small differences as noise.

## Why detach

`fake` carries G's autograd graph: the activations G saved to compute its own gradients later.
Without the detach (`no-detach`), the D loss backpropagates through `fake` into G. The D step fills
G's `.grad` although nobody asked for it (|grad| summing to {failed['g_grad_after_d_step']:.3g}), and because
`backward()` frees the graph it walks, it throws away G's saved activations. The G step needs
exactly that graph, and fails:

> {failed['error'] or '(it did not fail in this run)'}

With `detach`, the D step's backward stops at G's output: G's gradient after the D step is
{detach['g_grad_after_d_step']:g}, and G's graph survives untouched for the G step.

## Why the same `fake` is reused

The G step needs `D(G(z))` with a graph through G. `fake` already has that graph, so the tutorial
runs only D again, not G. The G step leaves D's parameters alone (`D changed in G step`:
{'yes' if detach['d_changed_in_g_step'] else 'no'}) because only `optimizer_g.step()` runs, even though its backward fills
D's `.grad` too; the next D step clears that. D's BatchNorm statistics do move in the G step:
{detach['d_bn_updates']} D BN updates per iteration (real, fake, and fake again), because D runs in train mode there.

## What `retain_graph=True` costs

`retain-graph` skips the detach and keeps G's graph alive with `retain_graph=True`. It works and
gives {update_verdict(retained)}: the G gradients of the D step
({retained['g_grad_after_d_step']:.3g} in total) are computed, then discarded by `zero_grad` before the G step.
The price is that wasted backward pass through G on every iteration ({ms['retain-graph']} against
{ms['detach']} for detach here) and a `.grad` buffer for G filled for nothing. Holding the graph costs no
extra saved-tensor memory ({kib(retained['saved_tensor_bytes'])} at the peak against {kib(detach['saved_tensor_bytes'])}):
`detach` keeps G's graph until the G step as well, and `retain_graph=True` only stops the D step's
backward from freeing it.

## What regenerating costs

`regenerate` runs G under `torch.no_grad()` for the D step and again, with gradients, for the G
step. It gives {update_verdict(regenerated)}: in train mode BatchNorm normalises with the
batch's own statistics, so the second forward of the same `z` through the same weights gives the
same `fake`. The difference hides in the buffers: G's BatchNorm running statistics are updated
{regenerated['g_bn_updates']} times per iteration instead of {detach['g_bn_updates']}, both times with the same batch
statistics, so the running averages that eval-mode sampling uses move as if BatchNorm's momentum
were {effective_momentum:.3g} instead of {momentum:g}. And it pays an extra forward pass through G
({ms['regenerate']} against {ms['detach']}).

## Freezing D in the G step

`freeze-d` is detach plus `requires_grad_(False)` on D's parameters during the G step, as StyleGAN
does. It gives {update_verdict(frozen)}. Autograd then computes only the gradient through D
into `fake`, not the D weight gradients that the tutorial's G step computes and never uses
({ms['freeze-d']} against {ms['detach']} here).

## Why `no_grad` for inference saves memory

Under `torch.no_grad()` autograd records nothing, so no activation is kept for a backward pass that
will never come. The D step of `regenerate` runs G that way and holds
{kib(regenerated['d_step_saved_tensor_bytes'])} of saved tensors at its peak, against
{kib(detach['d_step_saved_tensor_bytes'])} for the tutorial's D step. The difference, {kib(g_activations)}, is G's saved
activations for one batch of {args.batch_size}. Sampling from a trained generator needs none of them,
which is why `dcgan sample` runs G under `no_grad` (and in eval mode).
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model_config = ModelConfig(image_size=args.image_size, channels=args.channels, nz=args.nz, ngf=args.ngf, ndf=args.ndf)
    machine = machine_line()
    rows = compare_strategies(model_config, args.batch_size, seed=args.seed, repeats=args.repeats)
    print(format_table(rows))
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(shlex.quote(part) for part in ["python", "docs/make_why_detach.py", *given])
    args.out.write_text(render(rows, args, command, machine))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
