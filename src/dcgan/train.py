"""The training loop: the cadence of logging, sampling and checkpointing around `step.train_step`.

    trainer = Trainer(TrainConfig(data="mnist"))   # resolves data, builds models, makes the run folder
    run_folder = trainer.fit()
    Trainer.resume("runs/mnist-...").fit()         # continues exactly where the newest checkpoint stopped

Run folder:
    config.json            the resolved configuration
    stats.jsonl            one JSON object per step: step, epoch, loss_d, loss_g, d_real,
                           d_fake_before, d_fake_after, time (training seconds since the run started);
                           with --eval-every, also one row per evaluation after its step's row:
                           step, epoch, eval_n and eval_<metric> for each number it measured
    eval.jsonl             with --eval-every: each evaluation as `dcgan eval` writes it, plus step and epoch
    samples/epoch_0001.png fixed-noise grids (BatchNorm in eval mode), one per epoch, plus
                           step_XXXXXXXX.png when a run ends inside an epoch
    losses.png, progress.gif, real_vs_fake.png
    tb/                    TensorBoard events, with --tensorboard (see tensorboard_log.py)
    checkpoints/           step_XXXXXXXX.pt (each epoch end and every --checkpoint-every steps;
                           the last `keep`), final.pt, and last.pt pointing at the newest;
                           with --eval-every, best.pt: the state at the best evaluation so far

Evaluation (--eval-every K; settings and scorers in training_eval.py): after every K-th epoch and at
the end of the run, rank 0 scores the sampling generator on eval_n samples with the `dcgan eval`
metrics (evaluate.score_generator: the same z each time, BatchNorm in eval mode, no random stream
touched; with --eval-fid also FID and KID, against up to eval_n training images whose Inception
features are computed once, before the first step), before that step's checkpoint is written, so
every checkpoint carries the best value so far and a resumed run never replaces a better best.pt by
a worse one. The training steps are exactly those of a run without evaluation.

Divergence guard: a non-finite figure or parameter, or D(G(z)) below `collapse_threshold` for
`collapse_steps` steps in a row, rolls the run back to its newest checkpoint (only good states are
ever saved) and retries with a new data order, at most `max_retries` times.

Several processes (torchrun; see distributed.py): each rank trains on its share of every global
batch; rank 0 alone prints and writes the run folder. Whatever changes the sequence of steps is
decided on what every rank shares: figures averaged over the ranks (divergence), a vote (a stop
signal), the checkpoint rank 0 reads for all (rollback, resume); so no rank waits in a collective
the others skipped.
"""

from __future__ import annotations

import copy
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
from . import precision
from . import distributed
from .augment import make_augment
from .config import ModelConfig, TrainConfig, check_channel_codes
from .data import Batches, ImageSet, load_images
from .errors import DcganError
from .evaluate import append_result
from .metrics import summary_line
from .models import build_models, count_parameters
from .plots import load_grids, save_animation, save_grid, save_loss_plot, save_real_vs_fake
from .presets import R1_OFF_HINT
from .run_files import StatsLog, default_run_dir, prepare_run_dir, read_config, truncate_rows
from .sample import generate, truncate
from .sources import BUILTIN_SOURCES, Source, resolve_source
from .isolation import checked_train_step
from .step import GanState, figure_names, train_step
from .tensorboard_log import TensorBoardLog, require_tensorboard
from .training_eval import TrainingEvaluator, improves_best, resolve_evaluation

TUTORIAL_EPOCHS = 5
RESUME_OVERRIDABLE = ("epochs", "max_steps", "checkpoint_every", "keep", "progress", "log_every", "max_retries", "tensorboard",
                      "device", "dist_timeout", "check_isolation", "eval_every", "eval_n", "best_metric", "eval_fid",
                      "inception_weights")  # fmt: skip


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: the current step finished and a checkpoint was written."""

    def __init__(self, signum: int, step: int, run_dir: Path, processes: int = 1):
        command = f"dcgan train --resume {run_dir}"
        if processes > 1:  # the checkpoint's global batch needs as many processes again
            command = f"torchrun <{processes} processes, as before> -m {command}"
        super().__init__(f"interrupted at step {step}; checkpoint saved. Resume with: {command}")
        self.exit_status = 128 + signum


class _Diverged(Exception):
    pass


def _silent(message: str) -> None:
    pass  # the log of every rank but 0: one process speaks for the job


def ema_decay_at(config: TrainConfig, step: int) -> float:
    """The EMA's decay for step `step` (1-based): ema_decay, lowered by ema_rampup while the steps are few."""
    if config.ema_rampup is None:
        return config.ema_decay
    half_life = max(1.0, config.ema_rampup * step)  # in steps
    return min(config.ema_decay, 0.5 ** (1.0 / half_life))


def _make_run_dir(config: TrainConfig, source: Source) -> tuple[Path, Optional[Path]]:
    run_dir = Path(config.out) if config.out else default_run_dir(source.name)
    return run_dir, prepare_run_dir(run_dir)


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
        # several processes (torchrun): rank 0 alone prints and writes the run folder; see distributed.py
        self.processes = distributed.current()
        self.log = log = log if self.processes.is_main else _silent
        if config.tensorboard:
            require_tensorboard()  # before anything is made
        if config.r1 and config.sync_bn and self.processes.is_distributed and not config.spectral_norm:
            # R1 differentiates D's input gradient, and the gradient of BatchNorm's cross-process all-reduce is not differentiable
            raise DcganError(
                "--r1 cannot pass through D's BatchNorm synchronised across processes: "
                f"drop --sync-bn, turn R1 off ({R1_OFF_HINT}), or add --spectral-norm (no BatchNorm in D)"
            )
        source = resolve_source(config.data)
        config = resolve_config(config, source)
        if config.channel_codes:  # before the run folder: it needs the data's channels
            check_channel_codes(config.model().info_codes, config.channels)
        config, metric_kind = resolve_evaluation(config)
        self.device = distributed.resolve_device(config.device, self.processes)
        # --eval-every: rank 0's classifier and/or Inception reference, made before the run folder (training_eval.py)
        self.evaluator: Optional[TrainingEvaluator] = None
        if config.eval_fid or metric_kind:
            # made by rank 0 alone; from_main hands its failure (one line) to every rank, which would otherwise wait
            # for it in the next collective until --dist-timeout
            distributed.from_main(lambda: self._load_evaluator(config, metric_kind, log))
        run_dir, made = _resume_dir, None
        if not _resume_dir:  # made by rank 0 (the default name holds the time of day); the others learn its name
            run_dir, made = distributed.from_main(lambda: _make_run_dir(config, source))
            made = made if self.processes.is_main else None
        try:  # all of the rest, not just the data: a bad --init-g/--init-d file fails after the folder is made too
            self._build(config, source, run_dir, log, resuming=_resume_dir is not None)
        except BaseException:
            if made is not None:  # only folders this call made (with their missing parents): never one that was there before
                shutil.rmtree(made, ignore_errors=True)  # leave nothing behind for a run that never started
            raise

    def _load_evaluator(self, config: TrainConfig, metric_kind: Optional[str], log: Callable[[str], None]) -> None:
        self.evaluator = TrainingEvaluator(config, metric_kind, self.device, log)  # returns nothing: from_main sends no network

    def _build(self, config: TrainConfig, source: Source, run_dir: Path, log: Callable[[str], None], resuming: bool) -> None:
        """The part of __init__ after the run folder is made: data, networks, optimizers, noise, counters."""
        # several processes: each machine's first one decodes into the cache, the others read it back
        self.images: ImageSet = distributed.first_on_each_machine(
            lambda: load_images(source, config.image_size, config.channels, config.cache_dir, log=log)
        )
        ranks = self.processes
        self.batches = Batches(self.images.images, config.batch_size, config.seed, config.drop_last, ranks.rank, ranks.world_size)
        if self.images.skipped:
            log(f"skipped {self.images.skipped} of {len(source)} files in {source.name} that could not be decoded")
        self.config = config.replace(out=str(run_dir))
        self.run_dir = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self.stats = StatsLog(run_dir / "stats.jsonl")

        torch.manual_seed(config.seed)  # weights; data order and noise have generators of their own
        self.model_config = self.config.model()
        generator, discriminator = build_models(self.model_config)
        if not resuming:  # a resume loads every weight from its checkpoint: the warm-start files may be gone by then
            self._warm_start(generator, "generator", config.init_g)
            self._warm_start(discriminator, "discriminator", config.init_d)
        if config.sync_bn and self.processes.is_distributed:
            generator, discriminator = (distributed.convert_sync_batchnorm(m, self.device) for m in (generator, discriminator))
        elif config.sync_bn:  # said, not refused: the same command line may be run with and without torchrun
            log("--sync-bn has no effect with one process (BatchNorm already sees the whole batch); it applies under torchrun")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN times the convolution algorithms once, keeps the fastest
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        # the bare networks: what checkpoints store (so a single process loads them) and grids draw from
        self.generator = generator.to(self.device, memory_format=layout)
        self.discriminator = discriminator.to(self.device, memory_format=layout)
        # --ema-decay: a slowly moving average of G's weights, which draws the samples (Karras et al. 2018);
        # neither step reads it, so the D and G updates are unchanged
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False) if config.ema_decay else None
        self.precision, self._precision_reason = precision.resolve_precision(config.precision, self.device)
        betas = (config.beta1, config.beta2)
        networks = [distributed.wrap(m, self.device, self.processes) for m in (generator, discriminator)]  # DDP if several
        if config.compile:  # each network, not the step: the step reuses `fake` across two backward passes
            networks = [torch.compile(m) for m in networks]
        self.state = GanState(
            *networks,
            precision.adam(generator.parameters(), config.lr, betas),
            precision.adam(discriminator.parameters(), config.lr, betas),
            config.real_label,
            config.fake_label,
            loss=config.loss,
            augment=make_augment(config.diffaug),
            autocast=precision.autocast_factory(self.precision, self.device),
            scaler_d=precision.grad_scaler(self.precision, self.device),
            scaler_g=precision.grad_scaler(self.precision, self.device),
            info_codes=self.model_config.info_codes,
            info_weight=config.info_weight,
            channel_codes=config.channel_codes,
        )
        self.noise_rng = torch.Generator().manual_seed(config.seed + 1)  # z of each training step
        self.fixed_noise = torch.randn(config.n_fixed, config.nz, 1, 1, generator=torch.Generator().manual_seed(config.seed + 2))
        self.step = 0  # steps done
        self.epoch = 1  # the epoch in progress (1-based)
        self.batch_in_epoch = 0  # batches of that epoch done
        self.retries = 0  # divergence rollbacks so far; each one changes the data order
        self.elapsed = 0.0  # training seconds before this process (resumed runs)
        self.best: Optional[dict] = None  # --eval-every: {metric, value, step, epoch, n} of the best evaluation, kept in best.pt
        self._evaluated_step = -1  # the step of this process's last evaluation
        self._started = time.perf_counter()
        self._stop_signal: Optional[int] = None
        self._pending: list[tuple[int, int, float, torch.Tensor]] = []  # steps not yet read back
        self._collapsed = 0  # consecutive steps with a collapsed discriminator
        self._bar: Optional[tqdm] = None
        # TensorBoard events (--tensorboard); opened by fit() beside config.json, so only the process
        # that writes the run's files has one, and every hook below is a no-op while it is None
        self.tensorboard: Optional[TensorBoardLog] = None

    @classmethod
    def resume(cls, run_dir: Path, log: Callable[[str], None] = print, **changes) -> "Trainer":
        """Continue RUN from its newest good checkpoint, with RUN's config (only RESUME_OVERRIDABLE may change)."""
        run_dir = Path(run_dir)
        saved = distributed.from_main(lambda: read_config(run_dir))  # rank 0 reads the folder, every rank gets its config
        for name, value in changes.items():
            if name not in RESUME_OVERRIDABLE and value != getattr(saved, name):
                raise DcganError(
                    f"--{name.replace('_', '-')} {value} differs from the run's {getattr(saved, name)}; "
                    f"a resumed run keeps its configuration (only {', '.join(RESUME_OVERRIDABLE)} may change)"
                )
        trainer = cls(saved.replace(**{k: v for k, v in changes.items() if k in RESUME_OVERRIDABLE}), log, _resume_dir=run_dir)
        path, payload = trainer._newest_checkpoint()
        trainer.load_state(payload)
        trainer._drop_rows_after_step()
        best, config = trainer.best, trainer.config
        if best and config.eval_every and (best["metric"], best["n"]) != (config.best_metric, config.eval_n):
            trainer.log(
                f"best.pt (step {best['step']}) was chosen by {best['metric']} over {best['n']} samples; "
                f"the next evaluation starts a new best by {config.best_metric} over {config.eval_n}"
            )
        trainer.log(f"resuming {run_dir} from {path.name} at step {trainer.step} (epoch {trainer.epoch})")
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
        if self.processes.is_main:
            for folder in (self.run_dir / "samples", self.checkpoints):
                folder.mkdir(exist_ok=True)
            (self.run_dir / "config.json").write_text(self.config.to_json() + "\n")
        if self.config.tensorboard and self.tensorboard is None and self.processes.is_main:
            self.tensorboard = TensorBoardLog(self.run_dir / "tb", after_step=self.step)
        if self.step == 0:
            self._save_checkpoint()  # the point a divergence before the first epoch end rolls back to
        previous = self._install_signal_handlers()
        self._started = time.perf_counter()
        show_bar = self.config.progress and self.processes.is_main
        self._bar = tqdm(total=total, initial=self.step, disable=not show_bar, unit="step", dynamic_ncols=True)
        try:
            while self.step < total:
                try:
                    self._train_until(total)
                except _Diverged as reason:
                    self._roll_back(str(reason))
        finally:
            self._bar.close()
            self._restore_signal_handlers(previous)
            if self.tensorboard is not None:
                self.tensorboard.flush()  # an interrupted run keeps its events too
        if self.batch_in_epoch:  # the run ended inside an epoch
            self._save_grid(f"step_{self.step:08d}.png")
        if self.config.eval_every and self._evaluated_step != self.step:  # unless the last epoch end was just evaluated
            self._evaluate()
        self._save_checkpoint("final.pt")
        self._save_figures()
        self._summary()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        return self.run_dir

    def _train_until(self, total: int) -> None:
        config, per_epoch = self.config, len(self.batches)
        self._collapsed = 0
        while self.step < total:
            for real in self.batches.epoch(self.epoch, start=self.batch_in_epoch, variant=self.retries):
                # z of the whole global batch from the stream every rank shares, then this rank's share: the
                # ranks get different noise, and together the very z of one process with batch B*W
                z = torch.randn(len(real) * self.processes.world_size, config.nz, 1, 1, generator=self.noise_rng)
                z = distributed.shard(z, self.processes)
                real, z = self._to_device(real), self._to_device(z)
                # lazy R1 (StyleGAN2): on every r1_every-th step only, r1_every times as strong
                r1_gamma = config.r1 * config.r1_every if config.r1 and (self.step + 1) % config.r1_every == 0 else 0.0
                if config.check_isolation and (self.step + 1) % config.check_isolation == 0:
                    figures = checked_train_step(self.state, real, z, self.step + 1, r1_gamma=r1_gamma)
                else:
                    figures = train_step(self.state, real, z, r1_gamma=r1_gamma)
                if self.generator_ema is not None:
                    self._update_ema()
                self.step += 1
                self.batch_in_epoch += 1
                self._pending.append((self.step, self.epoch, self._seconds(), figures))
                if self.step % config.log_every == 0 or self.step == total:
                    self._flush()
                if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                    self._save_checkpoint()
                stop = distributed.max_over_ranks(self._stop_signal or 0)  # every rank stops after the same step
                if stop:
                    self._save_checkpoint()
                    raise TrainingInterrupted(stop, self.step, self.run_dir, self.processes.world_size)
                if self.step == total:
                    break
            if self.batch_in_epoch == per_epoch:
                self._save_grid(f"epoch_{self.epoch:04d}.png")
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if config.eval_every and (self.epoch - 1) % config.eval_every == 0:
                    self._evaluate()  # before the checkpoint, which then carries this evaluation's best
                self._save_checkpoint()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * G, weights in one fused pass; BatchNorm statistics copied.

        Called after step `self.step + 1`. With ema_rampup the decay is lowered while the steps are few,
        so that the half-life is at most ema_rampup x the steps so far: the average then never holds
        much of the untrained weights (a function of the step alone, so a resumed run matches).
        """
        ema_params, params = list(self.generator_ema.parameters()), list(self.generator.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay_at(self.config, self.step + 1))
        for ema_buffer, buffer in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema_buffer.copy_(buffer)

    @property
    def sampler(self) -> torch.nn.Module:
        """The network that draws grids and samples: the EMA when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def _seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self._started

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last and batch.dim() == 4 and batch.shape[-1] > 1:
            batch = batch.contiguous(memory_format=torch.channels_last)  # images; z (B, nz, 1, 1) needs nothing
        if self.device.type != "cuda":
            return batch
        # from pinned memory the copy is asynchronous: the GPU works on while the next batch is assembled
        return batch.pin_memory().to(self.device, non_blocking=True)

    def _flush(self) -> None:
        """One host read for all steps since the last flush: check them, log them, show the last."""
        if not self._pending:
            return
        # averaged over the ranks: the global batch's figures, the same on every rank, so that all
        # ranks take the same divergence decisions below
        values = distributed.average(torch.stack([figures for *_, figures in self._pending])).tolist()
        names = figure_names(self.state)
        rows = [
            {"step": step, "epoch": epoch, **dict(zip(names, row)), "time": round(seconds, 3)}
            for (step, epoch, seconds, _), row in zip(self._pending, values)
        ]
        self._pending.clear()
        for row in rows:  # checked before anything is written, so a diverged step is never logged
            if not all(math.isfinite(row[name]) for name in names):
                raise _Diverged(f"non-finite loss at step {row['step']}")
            self._collapsed = self._collapsed + 1 if row["d_fake_after"] < self.config.collapse_threshold else 0
            if self.config.collapse_steps and self._collapsed >= self.config.collapse_steps:
                raise _Diverged(f"D(G(z)) below {self.config.collapse_threshold} for {self._collapsed} steps up to step {row['step']}")
        if self.processes.is_main:
            self.stats.append(rows)
        if self.tensorboard is not None:
            self.tensorboard.scalars(rows)
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
        path, payload = self._newest_checkpoint()
        retries = self.retries
        self.load_state(payload)
        self.retries = retries  # the count goes on, and with it the data order changes
        self._drop_rows_after_step()
        self._bar.n = self.step
        self._bar.refresh()
        self.log(f"{reason}: rolled back to {path.name} (step {self.step}); retry {self.retries} of {self.config.max_retries}")

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        s = self.state
        # the bare networks' state_dicts (no DDP `module.` prefix): a single process loads them as they are
        return ckpt.make_checkpoint(
            self.model_config,
            self.config.to_dict(),
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            retries=self.retries,
            elapsed=self._seconds(),
            generator=self.generator.state_dict(),
            **({"generator_ema": self.generator_ema.state_dict()} if self.generator_ema is not None else {}),
            discriminator=self.discriminator.state_dict(),
            optimizer_g=s.optimizer_g.state_dict(),
            optimizer_d=s.optimizer_d.state_dict(),
            scalers={name: scaler.state_dict() for name, scaler in (("d", s.scaler_d), ("g", s.scaler_g)) if scaler is not None},
            fixed_noise=self.fixed_noise,
            data={"count": len(self.images), "batches_per_epoch": len(self.batches)},
            rng=ckpt.capture_rng({"noise": self.noise_rng}),
            world_size=self.processes.world_size,  # a resume needs as many processes: the global batch and data shares
            best=self.best,
        )

    def load_state(self, payload: dict) -> None:
        if ModelConfig(**payload["model"]) != self.model_config:  # older checkpoints lack the newer fields: their defaults
            raise DcganError("the checkpoint was made for another model (image size, channels, widths, spectral norm or pack)")
        if payload["data"]["count"] != len(self.images):
            raise DcganError(
                f"the data changed since the checkpoint: {payload['data']['count']} images then, {len(self.images)} now"
            )
        trained_by, world = payload.get("world_size", 1), self.processes.world_size  # checkpoints before torchrun support: 1
        if trained_by != world:
            raise DcganError(
                f"the run was trained by {trained_by} process(es) and this is {world}: resume it with {trained_by} "
                f"(torchrun --nproc_per_node ...), so each step keeps its global batch of {trained_by} x {self.config.batch_size}"
            )
        s = self.state
        ckpt.load_weights(self.generator, payload["generator"], "generator weights")
        if self.generator_ema is not None:
            ckpt.load_weights(self.generator_ema, payload.get("generator_ema", payload["generator"]), "generator EMA weights")
        ckpt.load_weights(self.discriminator, payload["discriminator"], "discriminator weights")
        s.optimizer_g.load_state_dict(payload["optimizer_g"])
        s.optimizer_d.load_state_dict(payload["optimizer_d"])
        for name, scaler in (("d", s.scaler_d), ("g", s.scaler_g)):
            if scaler is not None and name in payload.get("scalers", {}):
                scaler.load_state_dict(payload["scalers"][name])
        self.fixed_noise = payload["fixed_noise"]
        self.step, self.epoch, self.batch_in_epoch = payload["step"], payload["epoch"], payload["batch_in_epoch"]
        self.retries, self.elapsed = payload["retries"], payload["elapsed"]
        self.best = payload.get("best")
        self._started = time.perf_counter()
        ckpt.restore_rng(payload["rng"], {"noise": self.noise_rng})

    def _drop_rows_after_step(self) -> None:
        """After a rollback or resume: rows and events logged after the restored step are redone, so they are logged again."""
        if self.processes.is_main:
            self.stats.truncate(self.step)
            truncate_rows(self.run_dir / "eval.jsonl", self.step)  # evaluations too, so no step is in eval.jsonl twice
        if self.tensorboard is not None:  # a rollback mid-run (a resume opens it later, at its step)
            self.tensorboard.redo_after(self.step)

    def _check_good_state(self) -> None:
        """Pending figures checked, every parameter finite: only such a state is saved or evaluated."""
        self._flush()
        for module in (self.generator, self.discriminator):
            if not all(torch.isfinite(p).all() for p in module.parameters()):
                raise _Diverged(f"non-finite {type(module).__name__} weights at step {self.step}")

    def _save_checkpoint(self, name: Optional[str] = None) -> None:
        self._check_good_state()
        if self.processes.is_main:  # the weights are the same on every rank (checked in the tests)
            ckpt.save_run_checkpoint(self.state_dict(), self.checkpoints, name or f"step_{self.step:08d}.pt", self.config.keep)

    def _newest_checkpoint(self) -> tuple[Path, dict]:
        """Rank 0 picks and reads the newest good checkpoint and hands it to every rank: all go on from one state."""
        return distributed.from_main(lambda: ckpt.newest_good(self.checkpoints, self.log))

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self) -> None:
        """Score the sampling generator (rank 0; the others wait for its result), log it, keep best.pt."""
        self._check_good_state()  # every rank flushes together; a diverged state is neither scored nor saved
        config = self.config
        epoch = self.epoch if self.batch_in_epoch else self.epoch - 1  # the epoch of the last step
        started = time.perf_counter()
        result = distributed.from_main(lambda: self.evaluator.score(self.sampler))
        self._started += time.perf_counter() - started  # `time` in stats.jsonl counts training seconds only
        self._evaluated_step = self.step
        value = result[config.best_metric]  # one of the metrics of its kind (resolve_evaluation)
        improved = improves_best(self.best, config.best_metric, config.eval_n, value)
        if improved:
            self.best = {"metric": config.best_metric, "value": value, "step": self.step, "epoch": epoch, "n": config.eval_n}
        if not self.processes.is_main:
            return
        # the seed and truncation are the run's own (config.json), the same in every row; eval.jsonl keeps them
        numbers = {k: v for k, v in result.items() if k not in ("seed", "seconds", "truncation") and isinstance(v, (int, float))}
        row = {"step": self.step, "epoch": epoch, **{f"eval_{k}": v for k, v in numbers.items()}}
        self.stats.append([row])
        if self.tensorboard is not None:
            self.tensorboard.scalars([row])
        append_result(self.run_dir, {"step": self.step, "epoch": epoch, **result})
        note = ""
        if improved:
            ckpt.save_atomic(self.state_dict(), self.checkpoints / ckpt.BEST_NAME)  # holds self.best: its own step and value
            note = f"; new best {config.best_metric}, saved {ckpt.BEST_NAME}"
        scores = summary_line(result, tuple(k for k in numbers if k != "n"))
        self.log(f"evaluation at step {self.step} (epoch {epoch}, {config.eval_n} samples): {scores}{note}")

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
        if not self.processes.is_main:
            return
        images = generate(self.sampler, truncate(self.fixed_noise, self.config.truncation))
        save_grid(images, self.run_dir / "samples" / name)
        if self.tensorboard is not None:
            self.tensorboard.grid(images, self.step)
            self.tensorboard.histograms({"generator": self.generator, "discriminator": self.discriminator}, self.step)

    def _save_figures(self) -> None:
        if not self.processes.is_main:
            return
        rows = [r for r in self.stats.rows() if "loss_g" in r]  # training rows; evaluation rows have no losses
        steps = [r["step"] for r in rows]
        save_loss_plot(steps, [r["loss_g"] for r in rows], [r["loss_d"] for r in rows], self.run_dir / "losses.png")
        save_animation(load_grids(self.run_dir / "samples"), self.run_dir / "progress.gif")
        real = np.asarray(self.images.images[self.batches.order(1)[: self.config.n_fixed].numpy()])
        fake = generate(self.sampler, truncate(self.fixed_noise, self.config.truncation))
        save_real_vs_fake(real, fake, self.run_dir / "real_vs_fake.png")

    def _describe(self, total: int) -> None:
        c, per_epoch, world = self.config, len(self.batches), self.processes.world_size
        batch = f"batch {c.batch_size}"
        if world > 1:
            sync = ", BatchNorm over the global batch" if c.sync_bn else ""
            batch = f"global batch {self.batches.global_batch} ({world} processes x batch {c.batch_size}{sync})"
        self.log(
            f"data {c.data}: {len(self.images)} images, {c.image_size}x{c.image_size}x{c.channels}; "
            f"{batch}, {per_epoch} steps/epoch, {total} steps ({total / per_epoch:g} epochs)"
        )
        device = "" if self.device.type == "cpu" else f"; device {self.device.type if world > 1 else self.device}"
        layout = ", channels_last" if c.channels_last else ""
        self.log(f"precision {self.precision} ({self._precision_reason}){layout}{', torch.compile' if c.compile else ''}")
        self.log(
            f"G {count_parameters(self.generator) / 1e6:.2f}M parameters (nz {c.nz}, ngf {c.ngf}), "
            f"D {count_parameters(self.discriminator) / 1e6:.2f}M (ndf {c.ndf}); seed {c.seed}{device}; run folder {self.run_dir}"
        )
        training = [f"preset {c.preset}"] if c.preset else []
        training += [f"lr {c.lr:g}", f"Adam betas ({c.beta1:g}, {c.beta2:g})", f"loss {c.loss}"] + self._stabilisers()
        self.log("training: " + ", ".join(training))
        if c.truncation != 1:  # a setting of the drawing: the training z is never scaled
            self.log(f"samples: drawn with truncation {c.truncation:g} (z scaled by it)")

    def _stabilisers(self) -> list[str]:
        c = self.config
        named = [
            ("spectral norm in D", c.spectral_norm),
            (f"pack {c.pack}", c.pack > 1),
            (f"DiffAugment {c.diffaug}", c.diffaug),
            (f"R1 {c.r1:g} every {c.r1_every} steps", c.r1),
            (f"InfoGAN codes {c.info_codes} (weight {c.info_weight:g}{', one per channel' if c.channel_codes else ''})", self.model_config.info_codes),
            (f"EMA of G {c.ema_decay:g}{f', ramp-up {c.ema_rampup:g}' if c.ema_rampup else ''}" if c.ema_decay else "", c.ema_decay),
        ]
        return [name for name, on in named if on]

    def _summary(self) -> None:
        if not self.processes.is_main:
            return
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
        if self.best:
            best = self.best
            where = f"{best['metric']} {best['value']:.4g} at step {best['step']}, epoch {best['epoch']}"
            self.log(f"  {'best':<13} {self.checkpoints / ckpt.BEST_NAME} ({where})")
        if self.config.tensorboard:
            self.log(f"  {'tensorboard':<13} {run / 'tb'} (view: tensorboard --logdir {run / 'tb'})")
        self.log(f"sample more: dcgan sample --run {run} --n 64 --out {run / 'more.png'}")
        self.log(f"one-page report: dcgan report {run}")

