"""The training loop: the cadence of logging, sampling and checkpointing around `step.train_step`.

    trainer = Trainer(TrainConfig(data="mnist"))   # resolves data, builds models, makes the run folder
    run_folder = trainer.fit()

Run folder:
    config.json            the resolved configuration
    stats.jsonl            one JSON object per step: step, epoch, loss_d, loss_g, d_real,
                           d_fake_before, d_fake_after, time (seconds since the start)
    samples/epoch_0001.png fixed-noise grids (BatchNorm in eval mode), one per epoch, plus
                           step_XXXXXX.png when --max-steps ends a run inside an epoch
    losses.png, progress.gif, real_vs_fake.png
    checkpoints/           epoch_XXXX.pt (the last `keep`) and final.pt
"""

from __future__ import annotations

import json
import math
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import load_network_weights, load_weights, make_checkpoint, save_atomic
from .config import TrainConfig
from .data import Batches, ImageSet, load_images
from .errors import DcganError
from .models import build_models, count_parameters
from .plots import save_animation, save_grid, save_loss_plot, save_real_vs_fake
from .sample import generate
from .sources import resolve_source
from .step import FIGURE_NAMES, GanState, train_step


def default_run_dir(data_name: str, runs_root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, n = runs_root / f"{data_name}-{stamp}", 1
    while candidate.exists():
        n += 1
        candidate = runs_root / f"{data_name}-{stamp}-{n}"
    return candidate


def prepare_run_dir(path: Path) -> bool:
    """Create the run folder and prove it writable. Returns whether it was created here."""
    if path.exists() and not path.is_dir():
        raise DcganError(f"output path {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise DcganError(f"output folder {path} is not empty; choose a new --out so nothing saved there is overwritten")
    created = not path.exists()
    probe = path / ".write-test"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise DcganError(f"cannot write to output folder {path}: {error.strerror or error}") from None
    return created


class Trainer:
    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print):
        self.log = log
        source = resolve_source(config.data)
        config = config.replace(image_size=config.image_size or source.size, channels=config.channels or source.channels)
        run_dir = Path(config.out) if config.out else default_run_dir(source.name)
        created = prepare_run_dir(run_dir)
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

        torch.manual_seed(config.seed)  # weights; data order and noise have generators of their own
        model_config = self.config.model()
        generator, discriminator = build_models(model_config)
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
        self.model_config = model_config
        self.noise_rng = torch.Generator().manual_seed(config.seed + 1)  # z of each training step
        self.fixed_noise = torch.randn(config.n_fixed, config.nz, 1, 1, generator=torch.Generator().manual_seed(config.seed + 2))
        self.step = 0
        self.epoch = 0
        self.history: dict[str, list[float]] = {"step": [], "loss_d": [], "loss_g": []}
        self.grids: list[np.ndarray] = []

    def _warm_start(self, module: torch.nn.Module, which: str, path: Optional[str]) -> None:
        if path:
            state_dict, _ = load_network_weights(Path(path), which)
            load_weights(module, state_dict, f"{which} weights in {path}")
            self.log(f"{which} initialised from {path}")

    # ------------------------------------------------------------------ the loop

    def fit(self) -> Path:
        config, batches = self.config, self.batches
        steps_per_epoch = len(batches)
        total_steps = config.max_steps or config.epochs * steps_per_epoch
        epochs = math.ceil(total_steps / steps_per_epoch)
        self._describe(total_steps, epochs)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        (self.run_dir / "config.json").write_text(config.to_json() + "\n")

        bar = tqdm(total=total_steps, disable=not config.progress, unit="step", dynamic_ncols=True)
        started = time.perf_counter()
        pending: list[tuple[int, int, float, torch.Tensor]] = []
        with open(self.run_dir / "stats.jsonl", "a") as stats_file:
            for epoch in range(1, epochs + 1):
                self.epoch = epoch
                for real in batches.epoch(epoch):
                    z = torch.randn(len(real), config.nz, 1, 1, generator=self.noise_rng)
                    figures = train_step(self.state, real, z)
                    self.step += 1
                    pending.append((self.step, epoch, time.perf_counter() - started, figures))
                    if self.step % config.log_every == 0 or self.step == total_steps:
                        self._flush(pending, stats_file, bar)
                    if self.step == total_steps:
                        break
                if self.step == epoch * steps_per_epoch:  # the epoch ran to its end
                    self._save_grid(f"epoch_{epoch:04d}.png")
                    self._save_checkpoint(f"epoch_{epoch:04d}.pt")
            bar.close()
        if self.step != self.epoch * steps_per_epoch:  # stopped inside an epoch by max_steps
            self._save_grid(f"step_{self.step:06d}.png")
        self._save_checkpoint("final.pt")
        self._save_figures()
        self._summary(time.perf_counter() - started)
        return self.run_dir

    def _flush(self, pending: list, stats_file, bar: tqdm) -> None:
        """One host read for all steps since the last flush: rows to stats.jsonl, figures to the bar."""
        values = torch.stack([figures for *_, figures in pending]).tolist()
        for (step, epoch, seconds, _), row in zip(pending, values):
            record = {"step": step, "epoch": epoch, **dict(zip(FIGURE_NAMES, row)), "time": round(seconds, 3)}
            stats_file.write(json.dumps(record) + "\n")
            self.history["step"].append(step)
            self.history["loss_d"].append(record["loss_d"])
            self.history["loss_g"].append(record["loss_g"])
        stats_file.flush()
        last = dict(zip(FIGURE_NAMES, values[-1]))
        bar.set_postfix_str(
            f"epoch {pending[-1][1]} Loss_D {last['loss_d']:.3f} Loss_G {last['loss_g']:.3f} "
            f"D(x) {last['d_real']:.3f} D(G(z)) {last['d_fake_before']:.3f}/{last['d_fake_after']:.3f}",
            refresh=False,
        )
        bar.update(len(pending))
        pending.clear()

    # ------------------------------------------------------------------ outputs

    def _save_grid(self, name: str) -> None:
        images = generate(self.state.generator, self.fixed_noise)
        self.grids.append(save_grid(images, self.run_dir / "samples" / name))

    def _save_checkpoint(self, name: str) -> None:
        state = self.state
        payload = make_checkpoint(
            self.model_config,
            self.config.to_dict(),
            step=self.step,
            epoch=self.epoch,
            generator=state.generator.state_dict(),
            discriminator=state.discriminator.state_dict(),
            optimizer_g=state.optimizer_g.state_dict(),
            optimizer_d=state.optimizer_d.state_dict(),
            fixed_noise=self.fixed_noise,
            rng={"torch": torch.get_rng_state(), "noise": self.noise_rng.get_state()},
        )
        folder = self.run_dir / "checkpoints"
        save_atomic(payload, folder / name)
        epoch_files = sorted(folder.glob("epoch_*.pt"))
        for old in epoch_files[: max(0, len(epoch_files) - self.config.keep)]:
            old.unlink()

    def _save_figures(self) -> None:
        save_loss_plot(self.history["step"], self.history["loss_g"], self.history["loss_d"], self.run_dir / "losses.png")
        save_animation(self.grids, self.run_dir / "progress.gif")
        first_batch = self.batches.order(1)[: self.config.n_fixed].numpy()
        real = np.asarray(self.images.images[np.sort(first_batch)])
        save_real_vs_fake(real, generate(self.state.generator, self.fixed_noise), self.run_dir / "real_vs_fake.png")

    def _describe(self, total_steps: int, epochs: int) -> None:
        c, n = self.config, len(self.images)
        self.log(
            f"data {c.data}: {n} images, {c.image_size}x{c.image_size}x{c.channels}; "
            f"batch {c.batch_size}, {len(self.batches)} steps/epoch, {total_steps} steps ({epochs} epochs)"
        )
        self.log(
            f"G {count_parameters(self.state.generator) / 1e6:.2f}M parameters, "
            f"D {count_parameters(self.state.discriminator) / 1e6:.2f}M; seed {c.seed}; run folder {self.run_dir}"
        )

    def _summary(self, seconds: float) -> None:
        run = self.run_dir
        last_grid = sorted((run / "samples").glob("*.png"), key=lambda p: p.stat().st_mtime)[-1]
        self.log(f"finished {self.step} steps in {seconds:.0f} s")
        for label, path in (
            ("run folder", run),
            ("last samples", last_grid),
            ("sample grids", run / "samples"),
            ("loss plot", run / "losses.png"),
            ("animation", run / "progress.gif"),
            ("real vs fake", run / "real_vs_fake.png"),
            ("statistics", run / "stats.jsonl"),
            ("checkpoint", run / "checkpoints" / "final.pt"),
        ):
            self.log(f"  {label:<13} {path}")
        self.log(f"sample more: dcgan sample --run {run} --n 64 --out {run / 'more.png'}")
