"""`dcgan train --tensorboard`: the stats.jsonl figures, grids and weight histograms as TensorBoard events."""

import importlib.util
import json
import sys

import pytest

from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.errors import DcganError
from dcgan.step import FIGURE_NAMES
from dcgan.train import Trainer

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
TINY = ["--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch-size", "64", "--no-progress"]


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard is not installed: pip install tensorboard (it is in the test extra)")
def test_events_hold_the_figures_grids_and_histograms(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 8 steps an epoch: two epoch grids, and rows flushed every 5 steps (3 flushes, the last at step 16)
    config = TrainConfig(
        data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=64, max_steps=16, n_fixed=8, log_every=5,
        progress=False, tensorboard=True, out=str(tmp_path / "run"),
    )  # fmt: skip
    run = Trainer(config, log=lambda m: None).fit()
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    for name in FIGURE_NAMES:
        logged = events.Scalars(name)
        assert [e.step for e in logged] == [r["step"] for r in rows] == list(range(1, 17))
        assert [e.value for e in logged] == pytest.approx([r[name] for r in rows], rel=1e-6)  # float32 in the events
    assert "time" not in tags["scalars"] and "step" not in tags["scalars"]
    (grid,) = [tag for tag in tags["images"]]
    assert grid == "samples/fixed_noise" and [e.step for e in events.Images(grid)] == [8, 16]
    assert events.Images(grid)[0].width == 8 * 18 + 2  # the samples/ layout: 8 tiles of 16 px, 2 px apart
    assert {"generator/main.0.weight", "discriminator/main.0.weight"} <= set(tags["histograms"])
    assert [e.step for e in events.Histograms("generator/main.0.weight")] == [8, 16]


def test_missing_tensorboard_is_one_line_before_anything_is_made(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(DcganError, match=r"pip install tensorboard"):
        Trainer(TrainConfig(data="fake", tensorboard=True, out=str(tmp_path / "a")))
    status = main(["train", "--data", "fake", "--tensorboard", "--out", str(tmp_path / "b")] + TINY)
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "--tensorboard needs the tensorboard package" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard is not installed: pip install tensorboard (it is in the test extra)")
def test_evaluation_rows_are_grouped_under_eval(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dcgan.tensorboard_log import TensorBoardLog

    log = TensorBoardLog(tmp_path / "tb")
    # a stats.jsonl evaluation row, with --eval-fid's numbers
    log.scalars([{"step": 7, "epoch": 1, "eval_n": 50, "eval_confident": 0.5, "eval_kl_uniform": 0.25, "eval_fid": 80.0, "eval_n_real": 50}])
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"eval/confident", "eval/kl_uniform", "eval/fid"} <= scalars and not {"eval/n", "eval/n_real"} & scalars  # counts, not figures
    assert [(e.step, e.value) for e in events.Scalars("eval/confident")] == [(7, 0.5)]


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard is not installed: pip install tensorboard (it is in the test extra)")
def test_steps_redone_by_a_rollback_or_a_resume_are_plotted_once(tmp_path, monkeypatch):
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import dcgan.train

    real_step, calls = dcgan.train.train_step, {"n": 0}

    def nan_at_call_11(state, real, z, **options):  # step 11 diverges: the run goes back to step 8 and redoes 9 and 10
        calls["n"] += 1
        figures = real_step(state, real, z, **options)
        if calls["n"] == 11:
            with torch.no_grad():
                next(state.generator.parameters()).fill_(float("nan"))
            figures = figures * float("nan")
        return figures

    monkeypatch.setattr(dcgan.train, "train_step", nan_at_call_11)
    config = TrainConfig(
        data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=64, max_steps=14, n_fixed=8, log_every=5,
        checkpoint_every=4, keep=10, progress=False, tensorboard=True, out=str(tmp_path / "run"),
    )  # fmt: skip
    run = Trainer(config, log=lambda m: None).fit()
    monkeypatch.setattr(dcgan.train, "train_step", real_step)
    for late in ("final.pt", "last.pt", "step_00000014.pt", "step_00000012.pt"):  # as if stopped after its step-12 rows
        (run / "checkpoints" / late).unlink(missing_ok=True)
    Trainer.resume(run, max_steps=16, log=lambda m: None).fit()  # from step 8 again: redoes 9 to 14
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [e.step for e in events.Scalars("loss_d")] == [r["step"] for r in rows] == list(range(1, 17))
    assert [e.value for e in events.Scalars("loss_d")] == pytest.approx([r["loss_d"] for r in rows], rel=1e-6)
