"""Checkpoints that never lose work: exact resume, atomic saves, signals, safe loading, divergence guard."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dcgan.train
from dcgan import checkpoint as ckpt
from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.errors import DcganError
from dcgan.train import Trainer

# fake data: 512 images, batch 32 -> 16 steps an epoch
TINY = dict(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=32, n_fixed=8, log_every=2, progress=False, device="cpu")
CLI_TINY = ["--data", "fake", "--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch-size", "32", "--no-progress", "--device", "cpu"]
QUIET = dict(log=lambda message: None)


def _run(tmp_path, name, **changes):
    return Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / name), **changes}), **QUIET).fit()


def _rows(run):
    return [{k: v for k, v in r.items() if k != "time"} for r in map(json.loads, (run / "stats.jsonl").read_text().splitlines())]


def _assert_same_final_state(run_a, run_b):
    a, b = ckpt.read_file(run_a / "checkpoints" / "final.pt"), ckpt.read_file(run_b / "checkpoints" / "final.pt")
    assert a["step"] == b["step"]
    for key in ("generator", "discriminator"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for key in ("optimizer_g", "optimizer_d"):
        for slot_a, slot_b in zip(a[key]["state"].values(), b[key]["state"].values()):
            assert all(torch.equal(slot_a[k], slot_b[k]) for k in slot_a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: 40 steps (2.5 epochs) in one go."""
    folder = tmp_path_factory.mktemp("reference")
    # made before conftest's per-test thread count: set it here too, or an OMP_NUM_THREADS=1 environment would
    # train the reference with 1 thread and the runs compared with it with 2, which sum in another order
    torch.set_num_threads(2)
    return Trainer(TrainConfig(**{**TINY, "out": str(folder / "run"), "max_steps": 40, "checkpoint_every": 3}), **QUIET).fit()


def _spawn(args, tmp_path):
    # the thread count of the runs compared with it (conftest's), whatever OMP_NUM_THREADS the tests were started with
    env = {**os.environ, "DCGAN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([sys.executable, "-m", "dcgan", "train", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process, timeout=120.0):
    _wait_until(path.exists, process, timeout, f"{path} never appeared")


def _wait_until(condition, process, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _newest_step_name(folder: Path) -> int:
    return max((int(p.stem[5:]) for p in folder.glob("step_*.pt")), default=-1)


# ---------------------------------------------------------------- exact resume


def test_stop_inside_an_epoch_then_resume_is_bitwise_the_same_run(tmp_path, uninterrupted):
    stopped = _run(tmp_path, "run", max_steps=7, checkpoint_every=3)  # ends inside epoch 1
    resumed = Trainer.resume(stopped, max_steps=40, **QUIET)
    assert resumed.step == 7 and resumed.epoch == 1 and resumed.batch_in_epoch == 7
    resumed.fit()
    assert _rows(stopped) == _rows(uninterrupted)
    _assert_same_final_state(stopped, uninterrupted)


def test_sigkill_after_a_checkpoint_then_resume_is_bitwise_the_same_run(tmp_path, uninterrupted):
    run = tmp_path / "run"
    process = _spawn(CLI_TINY + ["--max-steps", "40", "--checkpoint-every", "3", "--log-every", "2", "--out", str(run)], tmp_path)
    _wait_for(run / "checkpoints" / "step_00000021.pt", process)  # inside epoch 2
    process.kill()
    process.wait()
    trainer = Trainer.resume(run, **QUIET)
    assert 21 <= trainer.step < 40
    trainer.fit()
    assert _rows(run) == _rows(uninterrupted)
    _assert_same_final_state(run, uninterrupted)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_and_say_how_to_resume(tmp_path, uninterrupted, signum, status):
    run = tmp_path / "run"
    process = _spawn(CLI_TINY + ["--max-steps", "40", "--checkpoint-every", "3", "--log-every", "2", "--out", str(run)], tmp_path)
    _wait_for(run / "checkpoints" / "step_00000006.pt", process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status
    lines = err.strip().splitlines()
    assert lines[-1] == f"dcgan: interrupted at step {ckpt.read_file(run / 'checkpoints' / 'last.pt')['step']}; checkpoint saved. Resume with: dcgan train --resume {run}"
    assert "Traceback" not in err
    assert main(["train", "--resume", str(run)]) == 0
    assert _rows(run) == _rows(uninterrupted)
    _assert_same_final_state(run, uninterrupted)


def test_resuming_a_finished_run_does_nothing_and_more_steps_extend_it(tmp_path):
    run = _run(tmp_path, "run", max_steps=5)
    before = (run / "checkpoints" / "final.pt").read_bytes()
    Trainer.resume(run, **QUIET).fit()
    assert (run / "checkpoints" / "final.pt").read_bytes() == before
    Trainer.resume(run, max_steps=9, **QUIET).fit()
    assert ckpt.read_file(run / "checkpoints" / "final.pt")["step"] == 9
    assert [r["step"] for r in _rows(run)] == list(range(1, 10))


def test_a_resume_with_a_different_config_is_refused(tmp_path, capsys):
    run = _run(tmp_path, "run", max_steps=2)
    with pytest.raises(DcganError, match="--batch-size 64 differs from the run's 32"):
        Trainer.resume(run, batch_size=64, **QUIET)
    assert main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    assert capsys.readouterr().err.strip().startswith("dcgan: error: --lr 0.1 differs from the run's 0.0002")


def test_checkpoint_holds_every_state(tmp_path):
    run = _run(tmp_path, "run", max_steps=3)
    payload = ckpt.read_file(run / "checkpoints" / "final.pt")
    for key in ("generator", "discriminator", "optimizer_g", "optimizer_d", "fixed_noise", "config", "model", "version"):
        assert key in payload
    assert (payload["step"], payload["epoch"], payload["batch_in_epoch"], payload["retries"]) == (3, 1, 3, 0)
    assert {"python", "numpy", "torch", "generators"} <= set(payload["rng"])
    assert payload["config"]["batch_size"] == 32 and payload["version"] == dcgan.__version__


# ---------------------------------------------------------------- atomic saves


def test_killing_a_run_repeatedly_while_it_saves_always_leaves_a_loadable_checkpoint(tmp_path):
    run = tmp_path / "run"
    shuffle = random.Random(0)
    args = CLI_TINY + ["--max-steps", "100000", "--checkpoint-every", "1", "--log-every", "1", "--keep", "2"]
    process = _spawn(args + ["--out", str(run)], tmp_path)
    steps = [0]
    for round_ in range(4):
        # let this process get past the last round's checkpoints, then kill it at a random moment
        _wait_until(lambda: _newest_step_name(run / "checkpoints") > steps[-1] + 2, process)
        time.sleep(shuffle.uniform(0.0, 0.5))  # a save every step: kills land in or near one
        process.kill()
        process.wait()
        visible = [p for p in (run / "checkpoints").glob("*.pt")]
        for path in visible:  # every file a user can see is whole
            assert ckpt.read_file(path)["format"] == ckpt.FORMAT
        path, payload = ckpt.newest_good(run / "checkpoints", log=lambda m: None)
        steps.append(payload["step"])
        process = _spawn(["--resume", str(run), "--max-steps", "100000"], tmp_path)
    process.kill()
    process.wait()
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # each resume went on from the last one


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = _run(tmp_path, "run", max_steps=3)
    good = run / "checkpoints" / "final.pt"
    before = good.read_bytes()

    def fill_disk(obj, f, *args, **kwargs):
        f.write(b"partial data")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", fill_disk)
    with pytest.raises(DcganError, match="cannot write checkpoint .*final.pt: No space left on device"):
        ckpt.save_atomic({"x": 1}, good)
    assert good.read_bytes() == before
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_run_folder_that_became_unwritable_is_one_clear_error(tmp_path, monkeypatch):
    run = _run(tmp_path, "run", max_steps=2)
    original = ckpt.save_atomic

    def read_only(payload, path):
        raise DcganError(f"cannot write checkpoint {path}: Read-only file system")

    monkeypatch.setattr(ckpt, "save_atomic", read_only)
    with pytest.raises(DcganError, match="Read-only file system"):
        Trainer.resume(run, max_steps=4, **QUIET).fit()
    monkeypatch.setattr(ckpt, "save_atomic", original)
    assert ckpt.read_file(run / "checkpoints" / "final.pt")["step"] == 2


# ---------------------------------------------------------------- safe loading


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"generator": _Exploit(str(marker))}, evil)
    with pytest.raises(DcganError, match="refusing to load .*evil.pt"):
        ckpt.read_file(evil)
    assert main(["sample", "--checkpoint", str(evil), "--out", str(tmp_path / "x.png")]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_truncated_and_garbage_checkpoints_are_one_line_errors(tmp_path, capsys):
    run = _run(tmp_path, "run", max_steps=2)
    data = (run / "checkpoints" / "final.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.pt").write_bytes(os.urandom(4000))
    for name in ("half.pt", "noise.pt"):
        assert main(["sample", "--checkpoint", str(tmp_path / name), "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"cannot read {tmp_path / name}" in err


def test_a_checkpoint_for_another_size_or_channel_count_is_named(tmp_path, capsys):
    run = _run(tmp_path, "run", max_steps=2)  # 16x16, 3 channels
    argv = ["train", "--data", "fake", "--image-size", "32", "--nz", "8", "--ngf", "4", "--ndf", "4", "--no-progress",
            "--init-g", str(run / "checkpoints" / "final.pt"), "--out", str(tmp_path / "other")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit this model" in err and "--image-size" in err
    argv[argv.index("32")] = "16"
    assert main(argv + ["--channels", "1", "--max-steps", "1"]) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    run = _run(tmp_path, "run", max_steps=6, checkpoint_every=2)
    final = run / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[:100])
    messages = []
    path, payload = ckpt.newest_good(run / "checkpoints", log=messages.append)
    assert path.name == "step_00000006.pt" and payload["step"] == 6
    assert any("skipping unreadable checkpoint" in m for m in messages)


# ---------------------------------------------------------------- divergence guard


def _poison(monkeypatch, bad_calls):
    """Make the listed train_step calls (1-based, counted across retries) blow G's weights up to NaN."""
    real_step, calls = dcgan.train.train_step, {"n": 0}

    def step(state, real, z, **options):
        calls["n"] += 1
        figures = real_step(state, real, z, **options)
        if calls["n"] in bad_calls:
            with torch.no_grad():
                next(state.generator.parameters()).fill_(float("nan"))
            figures = figures * float("nan")
        return figures

    monkeypatch.setattr(dcgan.train, "train_step", step)
    return calls


def test_a_nan_rolls_back_to_the_last_good_checkpoint_and_retries(tmp_path, monkeypatch):
    _poison(monkeypatch, bad_calls={11})
    messages = []
    config = TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "max_steps": 20, "checkpoint_every": 4})
    run = Trainer(config, log=messages.append).fit()
    assert any("non-finite loss at step 11: rolled back to step_00000008.pt (step 8); retry 1 of 3" in m for m in messages)
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert all(all(v == v for v in r.values()) for r in rows)  # no NaN was ever logged
    final = ckpt.read_file(run / "checkpoints" / "final.pt")
    assert final["retries"] == 1
    assert all(torch.isfinite(t).all() for t in final["generator"].values())
    for path in (run / "checkpoints").glob("step_*.pt"):  # no diverged state overwrote a good one
        assert all(torch.isfinite(t).all() for t in ckpt.read_file(path)["generator"].values())


def test_persistent_divergence_stops_after_the_allowed_retries(tmp_path, monkeypatch):
    _poison(monkeypatch, bad_calls=set(range(5, 10_000)))
    config = TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "max_steps": 20, "checkpoint_every": 2, "max_retries": 2})
    with pytest.raises(DcganError, match="training diverged .* 2 retries did not help"):
        Trainer(config, **QUIET).fit()
    path, payload = ckpt.newest_good(tmp_path / "run" / "checkpoints", log=lambda m: None)
    assert payload["step"] == 4 and all(torch.isfinite(t).all() for t in payload["generator"].values())


def test_a_collapsed_discriminator_counts_as_divergence(tmp_path):
    # every step counts as collapsed when the threshold is above 1
    config = TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "max_steps": 20, "collapse_threshold": 1.5, "collapse_steps": 3, "max_retries": 1})
    with pytest.raises(DcganError, match=r"D\(G\(z\)\) below 1.5 for 3 steps"):
        Trainer(config, **QUIET).fit()


def test_a_run_on_a_relative_folder_resumes_from_another_directory(tmp_path, monkeypatch):
    from conftest import random_images, write_png_folder

    write_png_folder(tmp_path / "project" / "photos", random_images(40, 20, 20, 3))
    monkeypatch.chdir(tmp_path / "project")
    config = TrainConfig(**{**TINY, "data": "photos", "batch_size": 8, "out": "run", "max_steps": 3})
    Trainer(config, **QUIET).fit()
    monkeypatch.chdir(tmp_path)
    Trainer.resume(Path("project/run"), max_steps=6, **QUIET).fit()
    assert [r["step"] for r in _rows(tmp_path / "project" / "run")] == list(range(1, 7))
