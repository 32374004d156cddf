import json

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.checkpoint import read_file
from dcgan.config import TrainConfig
from dcgan.errors import DcganError
from dcgan.train import Trainer

TINY = dict(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=32, n_fixed=16, log_every=3, progress=False, device="cpu")


def _train(tmp_path, name="run", **changes):
    config = TrainConfig(**{**TINY, "out": str(tmp_path / name), **changes})
    return Trainer(config, log=lambda message: None).fit()


def _rows(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def test_a_short_run_writes_every_output(tmp_path):
    run = _train(tmp_path, epochs=2)  # fake: 512 images / 32 = 16 steps per epoch
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(1, 33))
    assert {r["epoch"] for r in rows} == {1, 2}
    for row in rows:
        assert set(row) == {"step", "epoch", "loss_d", "loss_g", "d_real", "d_fake_before", "d_fake_after", "time"}
        assert all(np.isfinite(row[k]) for k in row)
    assert json.loads((run / "config.json").read_text())["image_size"] == 16
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    grid = Image.open(run / "samples" / "epoch_0002.png")
    assert grid.size == (8 * 18 + 2, 2 * 18 + 2)  # 16 fixed images, 8 a row, 2 px padding
    for name in ("losses.png", "real_vs_fake.png"):
        assert Image.open(run / name).size[0] > 300
    gif = Image.open(run / "progress.gif")
    assert gif.n_frames == 2
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["final.pt", "last.pt", "step_00000000.pt", "step_00000016.pt", "step_00000032.pt"]
    assert (run / "checkpoints" / "last.pt").resolve().name == "final.pt"
    checkpoint = read_file(run / "checkpoints" / "final.pt")  # loads with weights_only=True
    assert checkpoint["step"] == 32 and checkpoint["model"]["image_size"] == 16
    assert checkpoint["config"]["data"] == "fake" and "optimizer_g" in checkpoint


def test_max_steps_is_the_total_and_adds_a_grid_inside_an_epoch(tmp_path):
    run = _train(tmp_path, max_steps=20)  # 1 full epoch of 16 steps, then 4 more
    assert _rows(run)[-1]["step"] == 20
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0001.png", "step_00000020.png"]
    assert Image.open(run / "progress.gif").n_frames == 2


def test_only_the_last_k_periodic_checkpoints_are_kept(tmp_path):
    run = _train(tmp_path, epochs=3, keep=2, batch_size=128)  # 4 steps an epoch
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["final.pt", "last.pt", "step_00000008.pt", "step_00000012.pt"]


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    a, b = _train(tmp_path, "a", max_steps=6), _train(tmp_path, "b", max_steps=6)
    c = _train(tmp_path, "c", max_steps=6, seed=1)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(_rows(a)) == strip(_rows(b)) != strip(_rows(c))
    weights_a = read_file(a / "checkpoints" / "final.pt")["generator"]
    weights_b = read_file(b / "checkpoints" / "final.pt")["generator"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_warm_start_from_a_checkpoint(tmp_path):
    first = _train(tmp_path, "first", max_steps=3)
    checkpoint = first / "checkpoints" / "final.pt"
    config = TrainConfig(**{**TINY, "out": str(tmp_path / "second"), "init_g": str(checkpoint), "init_d": str(checkpoint)})
    trainer = Trainer(config, log=lambda m: None)
    saved = read_file(checkpoint)["generator"]
    assert all(torch.equal(v, saved[k]) for k, v in trainer.state.generator.state_dict().items())


def test_output_folder_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(DcganError, match="cannot write to output folder"):
        Trainer(TrainConfig(**{**TINY, "out": str(blocker / "run")}), log=lambda m: None)


def test_an_existing_run_is_never_overwritten(tmp_path):
    run = _train(tmp_path, max_steps=2)
    before = (run / "checkpoints" / "final.pt").read_bytes()
    with pytest.raises(DcganError, match="not empty"):
        _train(tmp_path, max_steps=2)
    assert (run / "checkpoints" / "final.pt").read_bytes() == before


def test_a_run_that_cannot_start_leaves_no_folder(tmp_path):
    with pytest.raises(DcganError, match="larger than the data set"):
        _train(tmp_path, "never", batch_size=4096)
    assert not (tmp_path / "never").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(DcganError, match="larger than the data set"):  # the parents it had to make go too; older ones stay
        _train(tmp_path, "kept/new/parents/never", batch_size=4096)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not any((tmp_path / "kept").iterdir())


CLI_TINY = ["train", "--data", "fake", "--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch-size", "32", "--no-progress", "--device", "cpu"]  # fmt: skip


def test_a_bad_init_file_leaves_no_run_folder(tmp_path, capsys):
    from conftest import error_line
    from dcgan.config import ModelConfig
    from dcgan.models import Discriminator

    wrong_shape = tmp_path / "netD-32.pth"  # a discriminator for 32x32 images, given to a 16x16 run
    torch.save(Discriminator(ModelConfig(32, 3, 8, 4, 4)).state_dict(), wrong_shape)
    missing = tmp_path / "missing.pth"
    cases = (("--init-g", missing, "not found"), ("--init-d", missing, "not found"), ("--init-d", wrong_shape, "does not fit"))
    for flag, path, message in cases:
        out = tmp_path / "run"
        assert message in error_line(capsys, [*CLI_TINY, flag, str(path), "--out", str(out)])
        assert not out.exists()

    existing = tmp_path / "existing"  # an empty folder given as --out: not ours to remove
    existing.mkdir()
    assert "does not fit" in error_line(capsys, [*CLI_TINY, "--init-d", str(wrong_shape), "--out", str(existing)])
    assert existing.is_dir() and not any(existing.iterdir())
    (existing / "notes.txt").write_text("keep me")  # one with content is refused before anything is made
    assert "not empty" in error_line(capsys, [*CLI_TINY, "--init-d", str(wrong_shape), "--out", str(existing)])
    assert [p.name for p in existing.iterdir()] == ["notes.txt"] and (existing / "notes.txt").read_text() == "keep me"


def test_sync_bn_in_one_process_says_it_has_no_effect(tmp_path, capsys):
    Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "sync_bn": True}))
    printed = capsys.readouterr().out.splitlines()
    assert sum("--sync-bn has no effect with one process" in line for line in printed) == 1
    Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / "plain")}))
    assert "--sync-bn" not in capsys.readouterr().out


def test_a_resume_that_fails_to_start_keeps_the_run(tmp_path, monkeypatch):
    import dcgan.train

    run = _train(tmp_path, max_steps=1)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))

    def broken(model_config):
        raise DcganError("cannot build")

    monkeypatch.setattr(dcgan.train, "build_models", broken)  # fails after the folder is known, as a bad --init-d would
    with pytest.raises(DcganError, match="cannot build"):
        Trainer.resume(run, log=lambda m: None)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_a_resume_does_not_need_the_warm_start_files_any_more(tmp_path):
    def fit(name, **changes):
        return Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / name), **changes}), log=lambda m: None).fit()

    def rows(run):
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in (run / "stats.jsonl").read_text().splitlines()]

    init = tmp_path / "init.pt"
    init.write_bytes((fit("donor", max_steps=2) / "checkpoints" / "final.pt").read_bytes())
    run, whole = fit("run", max_steps=3, init_g=str(init)), fit("whole", max_steps=5, init_g=str(init))
    init.unlink()  # moved or deleted after the run started: its weights are in the run's checkpoints
    messages = []
    Trainer.resume(run, log=messages.append, max_steps=5).fit()
    assert not any("initialised from" in m for m in messages)  # the checkpoint's weights, not the file's
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 4, 5] and rows(run) == rows(whole)  # and the resume is still exact
