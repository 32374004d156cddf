"""Why the tutorial writes `D(fake.detach())`: one real training iteration under five strategies, measured.

    rows = compare_strategies(ModelConfig(image_size=32, channels=1), batch_size=64)
    print(format_table(rows))

Strategies (each differs from `detach` only in where gradients flow or how often G runs):
    detach        the tutorial as written: D step on fake.detach(), G step reuses the same fake
    no-detach     D step on fake itself: its backward frees G's graph, so the G step fails
    retain-graph  no detach, D-step backward with retain_graph=True: works, computes G gradients it throws away
    regenerate    G under no_grad for the D step, G run again for the G step: an extra G forward,
                  and G's BatchNorm running statistics are updated twice
    freeze-d      detach, plus D's parameters set requires_grad_(False) during the G step (as StyleGAN does;
                  the toolkit's own step, dcgan.step)

Every strategy starts from the same weights, real batch and noise. One untimed probe run measures
the facts; `repeats` further runs, each from the same starting state, are timed. The comparison with
`detach` covers parameters only: BatchNorm running statistics are buffers; `g_bn_updates` and
`d_bn_updates` count how many times each network's statistics moved during the iteration.
"""

from __future__ import annotations

import copy
import statistics
import time
import weakref
from functools import partial
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

import torch
from torch import nn

from .config import ModelConfig, TrainConfig
from .errors import DcganError
from .losses import _bce
from .models import build_models
from .step import GanState, discriminator_step, generator_step

STRATEGIES = ("detach", "no-detach", "retain-graph", "regenerate", "freeze-d")
FIELD_NAMES = (
    "strategy", "ok", "error", "g_grad_after_d_step", "d_changed_in_g_step", "same_update_as_detach",
    "max_abs_diff_vs_detach", "g_bn_updates", "d_bn_updates", "saved_tensor_bytes", "d_step_saved_tensor_bytes", "ms_per_step",
)  # fmt: skip
SAME_UPDATE_TOLERANCE = 1e-6  # largest |difference| of a final parameter still counted as the same update as detach


# --- the strategies: a D phase returning `fake`, and a G phase given that fake and the noise -------------------


def _d_step_undetached(state: GanState, real: torch.Tensor, z: torch.Tensor, retain_graph: bool) -> torch.Tensor:
    """Phase 1, unlike detach, on `fake` itself: the D loss backpropagates on through `fake` into G."""
    D, G = state.discriminator, state.generator
    D.zero_grad(set_to_none=True)
    _bce(D(real), state.real_label).backward()
    fake = G(z)  # (B, C, H, W)
    # unlike detach: the backward fills G's .grad, and without retain_graph it frees G's saved tensors
    _bce(D(fake), state.fake_label).backward(retain_graph=retain_graph)
    state.optimizer_d.step()
    return fake


def _d_step_regenerate(state: GanState, real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Phase 1, unlike detach, with G under no_grad: nothing of G is saved, so there is nothing to detach."""
    D, G = state.discriminator, state.generator
    D.zero_grad(set_to_none=True)
    _bce(D(real), state.real_label).backward()
    with torch.no_grad():
        fake = G(z)  # (B, C, H, W); no graph, but G's BatchNorm still updates its running statistics
    _bce(D(fake), state.fake_label).backward()
    state.optimizer_d.step()
    return fake


def _g_step_tutorial(state: GanState, fake: torch.Tensor, z: torch.Tensor) -> None:
    """Phase 2 exactly as the tutorial writes it: the backward through D also computes D's own
    gradients, which nobody uses (the next D step clears them)."""
    state.generator.zero_grad(set_to_none=True)
    _bce(state.discriminator(fake), state.real_label).backward()
    state.optimizer_g.step()


def _g_step_regenerate(state: GanState, fake: torch.Tensor, z: torch.Tensor) -> None:
    # unlike detach: the graph-less fake cannot carry gradients, so G runs a second time on the same z
    _g_step_tutorial(state, state.generator(z), z)


def _g_step_frozen_d(state: GanState, fake: torch.Tensor, z: torch.Tensor) -> None:
    # unlike detach: D's weight gradients are not computed, only the gradient through D into fake;
    # this is the toolkit's own generator_step, which holds D fixed this way
    generator_step(state, fake)


def _d_step_tutorial(state: GanState, real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return discriminator_step(state, real, z)[0]


class Strategy(NamedTuple):
    d_phase: Callable[[GanState, torch.Tensor, torch.Tensor], torch.Tensor]  # (state, real, z) -> fake
    g_phase: Callable[[GanState, torch.Tensor, torch.Tensor], None]  # (state, fake, z)


_STRATEGY_TABLE = {
    "detach": Strategy(_d_step_tutorial, _g_step_tutorial),
    "no-detach": Strategy(partial(_d_step_undetached, retain_graph=False), _g_step_tutorial),  # fails in the G step
    "retain-graph": Strategy(partial(_d_step_undetached, retain_graph=True), _g_step_tutorial),  # G step clears G's .grad first
    "regenerate": Strategy(_d_step_regenerate, _g_step_regenerate),
    "freeze-d": Strategy(_d_step_tutorial, _g_step_frozen_d),
}


# --- measuring ---------------------------------------------------------------------------------------------------


class SavedTensorMeter:
    """Bytes held by autograd's saved tensors: current and peak, while the context is active.

    Each distinct storage counts once (a ReLU output saved by two nodes is one buffer), and the
    models' parameters are left out: they exist whether or not a graph is kept. The pack hook hands
    autograd a small wrapper; when autograd drops it (after backward, or with the graph) a
    weakref.finalize callback takes its bytes off the current total.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._holders: dict[int, int] = {}  # storage address -> number of live wrappers
        self.current = 0
        self.peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor) -> "_Saved":
        # detach: a saved output would otherwise hold its own grad_fn, a cycle that a retained graph never frees
        saved = _Saved(tensor.detach())
        storage = tensor.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if key in self._excluded:
            return saved
        if self._holders.get(key, 0) == 0:
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        self._holders[key] = self._holders.get(key, 0) + 1
        weakref.finalize(saved, self._release, key, nbytes)
        return saved

    @staticmethod
    def _unpack(saved: "_Saved") -> torch.Tensor:
        return saved.tensor

    def _release(self, key: int, nbytes: int) -> None:
        self._holders[key] -= 1
        if self._holders[key] == 0:
            del self._holders[key]
            self.current -= nbytes

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._hooks.__exit__(*exc_info)


class _Saved:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def _fresh_state(initial_generator: nn.Module, initial_discriminator: nn.Module) -> GanState:
    """Copies of the starting networks with new Adam optimizers (the tutorial's lr and betas)."""
    defaults = TrainConfig()
    generator, discriminator = copy.deepcopy(initial_generator), copy.deepcopy(initial_discriminator)
    generator.zero_grad(set_to_none=True)  # so G's .grad after the D step holds what that step alone put there
    betas = (defaults.beta1, defaults.beta2)
    return GanState(
        generator,
        discriminator,
        torch.optim.Adam(generator.parameters(), defaults.lr, betas=betas),
        torch.optim.Adam(discriminator.parameters(), defaults.lr, betas=betas),
        defaults.real_label,
        defaults.fake_label,
    )


def _bn_batches_tracked(module: nn.Module) -> int:
    """How many times the module's BatchNorm layers have updated their running statistics (the most of any)."""
    counts = [int(m.num_batches_tracked) for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    return max(counts, default=0)


def _parameters(state: GanState) -> list[torch.Tensor]:
    return [p.detach().clone() for net in (state.generator, state.discriminator) for p in net.parameters()]


def _probe(strategy: Strategy, initial: tuple[nn.Module, nn.Module], real: torch.Tensor, z: torch.Tensor) -> dict:
    """One untimed iteration that records the facts, and the final parameters (None when it failed)."""
    state = _fresh_state(*initial)
    G, D = state.generator, state.discriminator
    g_bn_before, d_bn_before = _bn_batches_tracked(G), _bn_batches_tracked(D)
    meter = SavedTensorMeter(exclude=list(G.parameters()) + list(D.parameters()))
    error: Optional[str] = None
    with meter:
        fake = strategy.d_phase(state, real, z)
        d_step_peak = meter.peak
        g_grad = sum((float(p.grad.abs().sum()) for p in G.parameters() if p.grad is not None), 0.0)
        d_before = [p.detach().clone() for p in D.parameters()]
        try:
            strategy.g_phase(state, fake, z)
        except RuntimeError as failure:
            error = (str(failure).splitlines() or [type(failure).__name__])[0]
    return {
        "ok": error is None,
        "error": error,
        "g_grad_after_d_step": g_grad,
        "d_changed_in_g_step": any(not torch.equal(a, p) for a, p in zip(d_before, D.parameters())),
        "g_bn_updates": _bn_batches_tracked(G) - g_bn_before,
        "d_bn_updates": _bn_batches_tracked(D) - d_bn_before,  # D runs in train mode in both steps
        "saved_tensor_bytes": meter.peak,
        "d_step_saved_tensor_bytes": d_step_peak,
        "final_parameters": None if error else _parameters(state),
    }


def _time_once(strategy: Strategy, initial: tuple[nn.Module, nn.Module], real: torch.Tensor, z: torch.Tensor) -> float:
    state = _fresh_state(*initial)
    start = time.perf_counter()
    strategy.g_phase(state, strategy.d_phase(state, real, z), z)
    return (time.perf_counter() - start) * 1000.0


def check_strategies(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise DcganError(f"unknown strategy {unknown[0]!r}: choose from {', '.join(STRATEGIES)}")
    if not names:
        raise DcganError(f"no strategy given: choose from {', '.join(STRATEGIES)}")
    return tuple(dict.fromkeys(names))  # drop repeats, keep the order given


def compare_strategies(
    model_config: ModelConfig, batch_size: int, seed: int = 0, repeats: int = 5, strategies: Sequence[str] = STRATEGIES
) -> list[dict]:
    """One row per strategy with the fields in FIELD_NAMES; see the module docstring."""
    names = check_strategies(strategies)
    if batch_size < 1:
        raise DcganError(f"batch size must be at least 1, not {batch_size}")
    if repeats < 1:
        raise DcganError(f"repeats must be at least 1, not {repeats}")
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
        torch.manual_seed(seed)
        initial = build_models(model_config)
    data = torch.Generator().manual_seed(seed)
    shape = (batch_size, model_config.channels, model_config.image_size, model_config.image_size)
    real = torch.rand(shape, generator=data) * 2 - 1  # (B, C, S, S) in [-1, 1]
    z = torch.randn(batch_size, model_config.nz, 1, 1, generator=data)  # (B, nz, 1, 1)

    probes = {name: _probe(_STRATEGY_TABLE[name], initial, real, z) for name in names}
    detach_probe = probes["detach"] if "detach" in probes else _probe(_STRATEGY_TABLE["detach"], initial, real, z)
    reference = detach_probe["final_parameters"]
    rows = []
    for name in names:
        probe = probes[name]
        final = probe.pop("final_parameters")
        diff = None if final is None else max(float((a - b).abs().max()) for a, b in zip(final, reference))
        timings = [_time_once(_STRATEGY_TABLE[name], initial, real, z) for _ in range(repeats)] if probe["ok"] else []
        probe.update(
            strategy=name,
            same_update_as_detach=None if diff is None else diff <= SAME_UPDATE_TOLERANCE,
            max_abs_diff_vs_detach=diff,
            ms_per_step=statistics.median(timings) if timings else None,  # a failed step has no time
        )
        rows.append({field: probe[field] for field in FIELD_NAMES})
    return rows


# --- presentation ------------------------------------------------------------------------------------------------

_COLUMNS = (
    ("strategy", "strategy"), ("ok", "ok"), ("G |grad| after D step", "g_grad_after_d_step"),
    ("D changed in G step", "d_changed_in_g_step"), ("same update as detach", "same_update_as_detach"),
    ("max |diff| vs detach", "max_abs_diff_vs_detach"), ("G BN updates", "g_bn_updates"), ("D BN updates", "d_bn_updates"),
    ("saved tensors KiB", "saved_tensor_bytes"), ("D step KiB", "d_step_saved_tensor_bytes"), ("ms/step", "ms_per_step"),
)  # fmt: skip


def _cell(field: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if field.endswith("bytes"):
        return f"{value / 1024:,.0f}"
    if field == "ms_per_step":
        return f"{value:.1f}"
    if isinstance(value, float):
        return "0" if value == 0 else f"{value:.3g}"
    return str(value)


def format_table(rows: Sequence[dict], markdown: bool = False) -> str:
    """A fixed-width table (or a markdown one), then each failed strategy's error on its own line."""
    headers = [title for title, _ in _COLUMNS]
    body = [[_cell(field, row[field]) for _, field in _COLUMNS] for row in rows]
    if markdown:
        headers = [title.replace("|", "\\|") for title in headers]  # a bare | would split the column
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
    else:
        widths = [max(len(text) for text in column) for column in zip(headers, *body)]
        lines = ["  ".join(text.ljust(width) for text, width in zip(cells, widths)).rstrip() for cells in [headers, *body]]
    errors = [f"{row['strategy']} failed: {row['error']}" for row in rows if row["error"]]
    if errors:
        lines += [""] + errors
    return "\n".join(lines)
