"""The fast path: precision choice, mixed-precision steps, scaler state in checkpoints, layout, fused Adam."""

import json

import pytest
import torch

from dcgan import checkpoint as ckpt
from dcgan import precision
from dcgan.config import TrainConfig
from dcgan.errors import DcganError
from dcgan.train import Trainer

TINY = dict(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=32, n_fixed=8, log_every=2, progress=False, device="cpu")
QUIET = dict(log=lambda message: None)


def _rows(run):
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in (run / "stats.jsonl").read_text().splitlines()]


def test_auto_takes_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: False)
    assert precision.resolve_precision("auto", cpu)[0] == "fp32"
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: True)
    assert precision.resolve_precision("auto", cpu)[0] == "bf16"
    assert precision.resolve_precision("fp16", cpu) == ("fp16", "as asked")
    with pytest.raises(DcganError, match="unknown precision 'fp8'"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_mixed_precision_runs_train_and_report_the_path(tmp_path, name):
    messages = []
    run = Trainer(TrainConfig(**TINY, out=str(tmp_path / name), max_steps=4, precision=name), log=messages.append).fit()
    assert any(m.startswith(f"precision {name} (as asked), channels_last") for m in messages)
    rows = _rows(run)
    assert len(rows) == 4 and all(all(v == v and abs(v) < 1e6 for v in r.values()) for r in rows)
    payload = ckpt.read_file(run / "checkpoints" / "final.pt")
    assert set(payload["scalers"]) == ({"d", "g"} if name == "fp16" else set())
    assert all(t.dtype == torch.float32 for t in payload["generator"].values() if t.is_floating_point())


def test_an_fp16_run_resumes_bitwise_with_its_loss_scales(tmp_path):
    whole = Trainer(TrainConfig(**TINY, out=str(tmp_path / "whole"), max_steps=8, precision="fp16"), **QUIET).fit()
    part = Trainer(TrainConfig(**TINY, out=str(tmp_path / "part"), max_steps=5, precision="fp16"), **QUIET).fit()
    resumed = Trainer.resume(part, max_steps=8, **QUIET)
    assert resumed.state.scaler_g.get_scale() == ckpt.read_file(part / "checkpoints" / "final.pt")["scalers"]["g"]["scale"]
    resumed.fit()
    assert _rows(part) == _rows(whole)


def test_networks_are_channels_last_and_adam_is_fused(tmp_path):
    trainer = Trainer(TrainConfig(**TINY, out=str(tmp_path / "run"), max_steps=1), **QUIET)
    weight = trainer.generator.main[3].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert trainer.state.optimizer_g.defaults.get("fused") is True
    nchw = Trainer(TrainConfig(**TINY, out=str(tmp_path / "nchw"), max_steps=1, channels_last=False), **QUIET)
    assert nchw.generator.main[3].weight.is_contiguous()


def test_compiled_networks_train_like_eager_ones(tmp_path):
    eager = Trainer(TrainConfig(**TINY, out=str(tmp_path / "eager"), max_steps=3), **QUIET).fit()
    compiled = Trainer(TrainConfig(**TINY, out=str(tmp_path / "compiled"), max_steps=3, compile=True), **QUIET).fit()
    for a, b in zip(_rows(eager), _rows(compiled)):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4) for k in a)
    saved = ckpt.read_file(compiled / "checkpoints" / "final.pt")["generator"]
    assert not any(key.startswith("_orig_mod.") for key in saved)  # checkpoints hold the bare network
