"""`dcgan train --tensorboard`: the run's figures, grids and weights as TensorBoard events in RUN/tb/.

    tensorboard --logdir runs/          # then open http://localhost:6006

What is written, and when (the Trainer calls these where it writes the same things to files):
    scalars      every stats.jsonl figure (loss_d, loss_g, d_real, d_fake_before, d_fake_after, and any
                 other number a row carries), at its step, when the rows are flushed; an evaluation's
                 eval_<metric> numbers (--eval-every) as eval/<metric>
    images       samples/fixed_noise: the fixed-noise grid, at each epoch end and at the run's last step
    histograms   generator/<parameter> and discriminator/<parameter>, at the same moments as the grids

Written through `torch.utils.tensorboard`, which needs the `tensorboard` package (the optional
extra `dcgan[tensorboard]`); it is imported only when a run asks for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DcganError
from .plots import image_grid

NOT_SCALARS = ("step", "time", "eval_n", "eval_n_real")  # row keys that are the x axis or a setting, not a figure to plot
EVAL_PREFIX = "eval_"  # stats.jsonl keys of an evaluation's numbers; TensorBoard groups them under eval/


def require_tensorboard() -> None:
    """Fail with one line, before a run starts, when the tensorboard package is missing."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (it imports tensorboard itself)
    except ImportError:
        raise DcganError(
            "--tensorboard needs the tensorboard package: pip install tensorboard (or pip install 'dcgan[tensorboard]')"
        ) from None


class TensorBoardLog:
    """One SummaryWriter for a run; create it only in the process that writes the run's files."""

    def __init__(self, log_dir: Path, after_step: int = 0):
        require_tensorboard()
        self.log_dir = Path(log_dir)
        self.writer = self._open(after_step)

    def _open(self, after_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # after_step: a resumed or rolled-back run redoes the steps after its checkpoint's; TensorBoard
        # hides the earlier events from the next step on (purge_step), so no step is plotted twice
        return SummaryWriter(log_dir=str(self.log_dir), purge_step=after_step + 1 if after_step else None)

    def redo_after(self, step: int) -> None:
        """A rollback mid-run to `step`: the steps after it are redone, so their earlier events are hidden."""
        self.writer.close()
        self.writer = self._open(step)

    def scalars(self, rows: list[dict]) -> None:
        for row in rows:
            for name, value in row.items():
                if name not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    tag = "eval/" + name[len(EVAL_PREFIX) :] if name.startswith(EVAL_PREFIX) else name
                    self.writer.add_scalar(tag, value, row["step"])

    def grid(self, images: np.ndarray, step: int) -> None:
        """uint8 (N, H, W, C) fixed-noise images, shown as one grid as in samples/."""
        grid = image_grid(images)  # (rows*(H+2)+2, cols*(W+2)+2, C)
        if grid.shape[-1] == 1:
            grid = grid.repeat(3, axis=-1)  # TensorBoard shows images as RGB
        self.writer.add_image("samples/fixed_noise", grid, step, dataformats="HWC")

    def histograms(self, networks: dict[str, torch.nn.Module], step: int) -> None:
        for network_name, module in networks.items():
            for name, parameter in module.named_parameters():
                self.writer.add_histogram(f"{network_name}/{name}", parameter.detach().float().cpu(), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
