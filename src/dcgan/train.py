"""The training loop: the cadence of logging, sampling and checkpointing around `step.train_step`.

    trainer = Trainer(TrainConfig(data="mnist"))   # resolves data, builds models, makes the run folder
    run_folder = trainer.fit()
    Trainer.resume("runs/mnist-...").fit()         # continues exactly where the newest checkpoint stopped

Run folder:
    config.json            the resolved configuration
    stats.jsonl            one JSON object per step: step, epoch, loss_d, loss_g, d_real,
                           d_fake_before, d_fake_after, time (seconds since the run started)
    samples/epoch_0001.png fixed-noise grids (BatchNorm in eval mode), one per epoch, plus
                           step_XXXXXXXX.png when a run ends inside an epoch
    losses.png, progress.gif, real_vs_fake.png
    checkpoints/           step_XXXXXXXX.pt (each epoch end and every --checkpoint-every steps;
                           the last `keep`), final.pt, and last.pt pointing at the newest

Divergence guard: a non-finite figure or parameter, or D(G(z)) below `collapse_threshold` for
`collapse_steps` steps in a row, rolls the run back to its newest checkpoint (only good states are
ever saved) and retries with a new data order, at most `max_retries` times.
"""

from __future__ import annotations

import math
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import Batches, ImageSet, load_images
from .errors import DcganError
from .models import build_models, count_parameters
from .plots import load_grids, save_animation, save_grid, save_loss_plot, save_real_vs_fake
from .run_files import StatsLog, default_run_dir, prepare_run_dir, read_config
from .sample import generate
from .sources import BUILTIN_SOURCES, Source, resolve_source
from .step import FIGURE_NAMES, GanState, train_step

TUTORIAL_EPOCHS = 5
RESUME_OVERRIDABLE = ("epochs", "max_steps", "checkpoint_every", "keep", "progress", "log_every", "max_retries")


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: the current step finished and a checkpoint was written."""

    def __init__(self, signum: int, step: int, run_dir: Path):
        super().__init__(f"interrupted at step {step}; checkpoint saved. Resume with: dcgan train --resume {run_dir}")
        self.exit_status = 128 + signum


class _Diverged(Exception):
    pass


def resolve_config(config: TrainConfig, source: Source) -> TrainConfig:
    """Fill every None default from the data source."""
    size = config.image_size or source.size
    width = 64 if size >= 64 else 32  # the tutorial's 64 at its 64x64; half that below trains 3x faster
    # a path is stored absolute, so `--resume` works from any working directory
    data = config.data if source.kind in BUILTIN_SOURCES else str(Path(config.data).expanduser().resolve())
    return config.replace(
        data=data, image_size=size, channels=config.channels or source.channels, ngf=config.ngf or width, ndf=config.ndf or width
    )


class Trainer:
    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print, *, _resume_dir: Optional[Path] = None):
        self.log = log
        source = resolve_source(config.data)
        config = resolve_config(config, source)
        run_dir = _resume_dir or (Path(config.out) if config.out else default_run_dir(source.name))
        created = False if _resume_dir else prepare_run_dir(run_dir)
        try:
            self.images: ImageSet = load_images(source, config.image_size, config.channels, config.cache_dir, log=log)
            self.batches = Batches(self.images.images, config.batch_size, config.seed, config.drop_last)
        except BaseException:
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)  # leave nothing behind for a run that never started
            raise
        if self.images.skipped:
            log(f"skipped {self.images.skipped} of {len(source)} files in {source.name} that could not be decoded")
        self.config = config.replace(out=str(run_dir))
        self.run_dir = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self.stats = StatsLog(run_dir / "stats.jsonl")

        torch.manual_seed(config.seed)  # weights; data order and noise have generators of their own
        self.model_config = self.config.model()
        generator, discriminator = build_models(self.model_config)
        self._warm_start(generator, "generator", config.init_g)
        self._warm_start(discriminator, "discriminator", config.init_d)
        betas = (config.beta1, config.beta2)
        self.state = GanState(
            generator,
            discriminator,
            torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas),
            torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas),
            config.real_label,
            config.fake_label,
        )
        self.noise_rng = torch.Generator().manual_seed(config.seed + 1)  # z of each training step
        self.fixed_noise = torch.randn(config.n_fixed, config.nz, 1, 1, generator=torch.Generator().manual_seed(config.seed + 2))
        self.step = 0  # steps done
        self.epoch = 1  # the epoch in progress (1-based)
        self.batch_in_epoch = 0  # batches of that epoch done
        self.retries = 0  # divergence rollbacks so far; each one changes the data order
        self.elapsed = 0.0  # training seconds before this process (resumed runs)
        self._started = time.perf_counter()
        self._stop_signal: Optional[int] = None
        self._pending: list[tuple[int, int, float, torch.Tensor]] = []  # steps not yet read back
        self._collapsed = 0  # consecutive steps with a collapsed discriminator
        self._bar: Optional[tqdm] = None

    @classmethod
    def resume(cls, run_dir: Path, log: Callable[[str], None] = print, **changes) -> "Trainer":
        """Continue RUN from its newest good checkpoint, with RUN's config (only RESUME_OVERRIDABLE may change)."""
        run_dir = Path(run_dir)
        saved = read_config(run_dir)
        for name, value in changes.items():
            if name not in RESUME_OVERRIDABLE and value != getattr(saved, name):
                raise DcganError(
                    f"--{name.replace('_', '-')} {value} differs from the run's {getattr(saved, name)}; "
                    f"a resumed run keeps its configuration (only {', '.join(RESUME_OVERRIDABLE)} may change)"
                )
        trainer = cls(saved.replace(**{k: v for k, v in changes.items() if k in RESUME_OVERRIDABLE}), log, _resume_dir=run_dir)
        path, payload = ckpt.newest_good(trainer.checkpoints, log)
        trainer.load_state(payload)
        trainer.stats.truncate(trainer.step)  # rows logged after that checkpoint are redone
        log(f"resuming {run_dir} from {path.name} at step {trainer.step} (epoch {trainer.epoch})")
        return trainer

    def _warm_start(self, module: torch.nn.Module, which: str, path: Optional[str]) -> None:
        if path:
            state_dict, _ = ckpt.load_network_weights(Path(path), which)
            ckpt.load_weights(module, state_dict, f"{which} weights in {path}")
            self.log(f"{which} initialised from {path}")

    @property
    def total_steps(self) -> int:
        c, per_epoch = self.config, len(self.batches)
        if c.max_steps:
            return c.max_steps
        epochs = c.epochs or max(TUTORIAL_EPOCHS, math.ceil(c.min_steps / per_epoch))
        return epochs * per_epoch

    # ------------------------------------------------------------------ the loop

    def fit(self) -> Path:
        total = self.total_steps
        if self.step >= total:
            self.log(f"{self.run_dir} is already at step {self.step} of {total}; raise --max-steps or --epochs to continue")
            return self.run_dir
        self._describe(total)
        for folder in (self.run_dir / "samples", self.checkpoints):
            folder.mkdir(exist_ok=True)
        (self.run_dir / "config.json").write_text(self.config.to_json() + "\n")
        if self.step == 0:
            self._save_checkpoint()  # the point a divergence before the first epoch end rolls back to
        previous = self._install_signal_handlers()
        self._started = time.perf_counter()
        self._bar = tqdm(total=total, initial=self.step, disable=not self.config.progress, unit="step", dynamic_ncols=True)
        try:
            while self.step < total:
                try:
                    self._train_until(total)
                except _Diverged as reason:
                    self._roll_back(str(reason))
        finally:
            self._bar.close()
            self._restore_signal_handlers(previous)
        if self.batch_in_epoch:  # the run ended inside an epoch
            self._save_grid(f"step_{self.step:08d}.png")
        self._save_checkpoint("final.pt")
        self._save_figures()
        self._summary()
        return self.run_dir

    def _train_until(self, total: int) -> None:
        config, per_epoch = self.config, len(self.batches)
        self._collapsed = 0
        while self.step < total:
            for real in self.batches.epoch(self.epoch, start=self.batch_in_epoch, variant=self.retries):
                z = torch.randn(len(real), config.nz, 1, 1, generator=self.noise_rng)
                figures = train_step(self.state, real, z)
                self.step += 1
                self.batch_in_epoch += 1
                self._pending.append((self.step, self.epoch, self._seconds(), figures))
                if self.step % config.log_every == 0 or self.step == total:
                    self._flush()
                if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                    self._save_checkpoint()
                if self._stop_signal is not None:
                    self._save_checkpoint()
                    raise TrainingInterrupted(self._stop_signal, self.step, self.run_dir)
                if self.step == total:
                    break
            if self.batch_in_epoch == per_epoch:
                self._save_grid(f"epoch_{self.epoch:04d}.png")
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                self._save_checkpoint()

    def _seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self._started

    def _flush(self) -> None:
        """One host read for all steps since the last flush: check them, log them, show the last."""
        if not self._pending:
            return
        values = torch.stack([figures for *_, figures in self._pending]).tolist()
        rows = [
            {"step": step, "epoch": epoch, **dict(zip(FIGURE_NAMES, row)), "time": round(seconds, 3)}
            for (step, epoch, seconds, _), row in zip(self._pending, values)
        ]
        self._pending.clear()
        for row in rows:  # checked before anything is written, so a diverged step is never logged
            if not all(math.isfinite(row[name]) for name in FIGURE_NAMES):
                raise _Diverged(f"non-finite loss at step {row['step']}")
            self._collapsed = self._collapsed + 1 if row["d_fake_after"] < self.config.collapse_threshold else 0
            if self.config.collapse_steps and self._collapsed >= self.config.collapse_steps:
                raise _Diverged(f"D(G(z)) below {self.config.collapse_threshold} for {self._collapsed} steps up to step {row['step']}")
        self.stats.append(rows)
        if self._bar is None:
            return
        last = rows[-1]
        self._bar.set_postfix_str(
            f"epoch {last['epoch']} Loss_D {last['loss_d']:.3f} Loss_G {last['loss_g']:.3f} "
            f"D(x) {last['d_real']:.3f} D(G(z)) {last['d_fake_before']:.3f}/{last['d_fake_after']:.3f}",
            refresh=False,
        )
        self._bar.update(len(rows))

    def _roll_back(self, reason: str) -> None:
        self.retries += 1
        if self.retries > self.config.max_retries:
            raise DcganError(
                f"training diverged ({reason}) and {self.config.max_retries} retries did not help; "
                f"the last good checkpoint is kept in {self.checkpoints}; try a lower --lr"
            )
        path, payload = ckpt.newest_good(self.checkpoints, self.log)
        retries = self.retries
        self.load_state(payload)
        self.retries = retries  # the count goes on, and with it the data order changes
        self.stats.truncate(self.step)
        self._bar.n = self.step
        self._bar.refresh()
        self.log(f"{reason}: rolled back to {path.name} (step {self.step}); retry {self.retries} of {self.config.max_retries}")

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        s = self.state
        return ckpt.make_checkpoint(
            self.model_config,
            self.config.to_dict(),
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            retries=self.retries,
            elapsed=self._seconds(),
            generator=s.generator.state_dict(),
            discriminator=s.discriminator.state_dict(),
            optimizer_g=s.optimizer_g.state_dict(),
            optimizer_d=s.optimizer_d.state_dict(),
            fixed_noise=self.fixed_noise,
            data={"count": len(self.images), "batches_per_epoch": len(self.batches)},
            rng=ckpt.capture_rng({"noise": self.noise_rng}),
        )

    def load_state(self, payload: dict) -> None:
        if ckpt.model_fields(payload) != vars(self.model_config):
            raise DcganError("the checkpoint was made for another model (image size, channels or widths differ)")
        if payload["data"]["count"] != len(self.images):
            raise DcganError(
                f"the data changed since the checkpoint: {payload['data']['count']} images then, {len(self.images)} now"
            )
        s = self.state
        ckpt.load_weights(s.generator, payload["generator"], "generator weights")
        ckpt.load_weights(s.discriminator, payload["discriminator"], "discriminator weights")
        s.optimizer_g.load_state_dict(payload["optimizer_g"])
        s.optimizer_d.load_state_dict(payload["optimizer_d"])
        self.fixed_noise = payload["fixed_noise"]
        self.step, self.epoch, self.batch_in_epoch = payload["step"], payload["epoch"], payload["batch_in_epoch"]
        self.retries, self.elapsed = payload["retries"], payload["elapsed"]
        self._started = time.perf_counter()
        ckpt.restore_rng(payload["rng"], {"noise": self.noise_rng})

    def _save_checkpoint(self, name: Optional[str] = None) -> None:
        """Save only a good state: pending figures checked, every parameter finite."""
        self._flush()
        for module in (self.state.generator, self.state.discriminator):
            if not all(torch.isfinite(p).all() for p in module.parameters()):
                raise _Diverged(f"non-finite {type(module).__name__} weights at step {self.step}")
        ckpt.save_run_checkpoint(self.state_dict(), self.checkpoints, name or f"step_{self.step:08d}.pt", self.config.keep)

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self) -> dict:
        def request_stop(signum, _frame):
            self._stop_signal = signum  # acted on after the current step

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, request_stop)
            except ValueError:  # not the main thread: leave signals to the caller
                pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    # ------------------------------------------------------------------ outputs

    def _save_grid(self, name: str) -> None:
        save_grid(generate(self.state.generator, self.fixed_noise), self.run_dir / "samples" / name)

    def _save_figures(self) -> None:
        rows = self.stats.rows()
        steps = [r["step"] for r in rows]
        save_loss_plot(steps, [r["loss_g"] for r in rows], [r["loss_d"] for r in rows], self.run_dir / "losses.png")
        save_animation(load_grids(self.run_dir / "samples"), self.run_dir / "progress.gif")
        real = np.asarray(self.images.images[self.batches.order(1)[: self.config.n_fixed].numpy()])
        save_real_vs_fake(real, generate(self.state.generator, self.fixed_noise), self.run_dir / "real_vs_fake.png")

    def _describe(self, total: int) -> None:
        c, per_epoch = self.config, len(self.batches)
        self.log(
            f"data {c.data}: {len(self.images)} images, {c.image_size}x{c.image_size}x{c.channels}; "
            f"batch {c.batch_size}, {per_epoch} steps/epoch, {total} steps ({total / per_epoch:g} epochs)"
        )
        self.log(
            f"G {count_parameters(self.state.generator) / 1e6:.2f}M parameters (ngf {c.ngf}), "
            f"D {count_parameters(self.state.discriminator) / 1e6:.2f}M (ndf {c.ndf}); seed {c.seed}; run folder {self.run_dir}"
        )

    def _summary(self) -> None:
        run = self.run_dir
        last_grid = sorted((run / "samples").glob("*.png"))[-1]
        self.log(f"finished {self.step} steps in {self._seconds():.0f} s of training")
        for label, path in (
            ("run folder", run),
            ("last samples", last_grid),
            ("sample grids", run / "samples"),
            ("loss plot", run / "losses.png"),
            ("animation", run / "progress.gif"),
            ("real vs fake", run / "real_vs_fake.png"),
            ("statistics", run / "stats.jsonl"),
            ("checkpoint", self.checkpoints / "final.pt"),
        ):
            self.log(f"  {label:<13} {path}")
        self.log(f"sample more: dcgan sample --run {run} --n 64 --out {run / 'more.png'}")

