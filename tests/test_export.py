"""Exported generators compute what the PyTorch generator computes, in eval mode.

Tolerances: ONNX (run by onnxruntime) within atol 1e-5 of PyTorch on the same noise, TorchScript
within 1e-6 (it runs PyTorch's own kernels), safetensors bit for bit (the same weights, reloaded).
"""

import sys

import numpy as np
import pytest
import torch

from dcgan.cli import main
from dcgan.config import ModelConfig, TrainConfig
from dcgan.errors import DcganError
from dcgan.export import export_generator, load_safetensors_generator
from dcgan.models import build_models
from dcgan.sample import generate, latent, load_generator
from dcgan.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # the format asked for

ONNX_ATOL = 1e-5
TORCHSCRIPT_ATOL = 1e-6


@pytest.fixture(scope="module", params=[(), (3, 2)], ids=["plain", "info_codes"])
def generator(request):
    torch.manual_seed(0)
    generator, _ = build_models(ModelConfig(image_size=16, channels=3, nz=8, ngf=4, ndf=4, info_codes=request.param))
    with torch.no_grad():  # move BatchNorm's running statistics off (0, 1), so eval mode matters
        for _ in range(3):
            generator(torch.randn(32, 8, 1, 1) * 2 + 0.5)
    return generator.eval()


def _reference(generator, z):
    with torch.no_grad():
        return generator.eval()(z).numpy()


def test_onnx_matches_pytorch(generator, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (it is in the test extra)")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (it is in the test extra)")
    path = tmp_path / "g.onnx"
    export_generator(generator, "onnx", path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z"] and [o.name for o in session.get_outputs()] == ["images"]
    for batch in (1, 5):  # the exporter saw a batch of 2: the batch axis is dynamic
        z = latent(batch, 8, seed=batch)
        (images,) = session.run(None, {"z": z.numpy()})
        assert images.shape == (batch, 3, 16, 16)
        np.testing.assert_allclose(images, _reference(generator, z), rtol=0, atol=ONNX_ATOL)


def test_torchscript_matches_pytorch(generator, tmp_path):
    path = tmp_path / "g.pt"
    export_generator(generator, "torchscript", path)
    scripted = torch.jit.load(str(path))
    z = latent(5, 8, seed=1)
    with torch.no_grad():
        images = scripted(z).numpy()
    np.testing.assert_allclose(images, _reference(generator, z), rtol=0, atol=TORCHSCRIPT_ATOL)


def test_safetensors_round_trip_gives_identical_images(generator, tmp_path):
    pytest.importorskip("safetensors", reason="safetensors is not installed (it is in the test extra)")
    from safetensors import safe_open

    path = tmp_path / "g.safetensors"
    export_generator(generator, "safetensors", path)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["format"] == "dcgan-generator-1"
    reloaded = load_safetensors_generator(path)
    assert reloaded.config == generator.config and not reloaded.training
    z = latent(6, 8, seed=2)
    np.testing.assert_array_equal(generate(reloaded, z), generate(generator, z))
    np.testing.assert_array_equal(generate(load_generator(checkpoint=path), z), generate(generator, z))  # dcgan sample --checkpoint


def test_export_leaves_the_callers_generator_alone(generator, tmp_path):
    generator.train()
    try:
        export_generator(generator, "torchscript", tmp_path / "g.pt")
        assert generator.training
    finally:
        generator.eval()


def test_missing_packages_name_the_pip_command(generator, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(DcganError, match=r"pip install onnx onnxscript"):
        export_generator(generator, "onnx", tmp_path / "g.onnx")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(DcganError, match=r"pip install safetensors"):
        export_generator(generator, "safetensors", tmp_path / "g.safetensors")


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    pytest.importorskip("safetensors", reason="safetensors is not installed (it is in the test extra)")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DcganError, match="without dcgan generator metadata"):
        load_safetensors_generator(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DcganError, match="cannot read"):
        load_safetensors_generator(tmp_path / "junk.safetensors")


def test_export_through_the_cli(tmp_path, capsys):
    config = TrainConfig(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=64, max_steps=2, progress=False, out=str(tmp_path / "run"))
    run = Trainer(config, log=lambda m: None).fit()
    out = tmp_path / "g.pt"
    assert main(["export", "--run", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    assert "z (B, 8, 1, 1) -> images (B, 3, 16, 16)" in capsys.readouterr().out
    z = latent(4, 8, seed=0)
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(out))(z).numpy(), _reference(load_generator(run), z), rtol=0, atol=TORCHSCRIPT_ATOL)
    assert main(["export", "--format", "onnx", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "dcgan: error: give --run RUN or --checkpoint FILE"
