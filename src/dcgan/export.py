"""The generator alone, in eval mode, for use outside this package: ONNX, TorchScript or safetensors.

    export_generator(load_generator(run), "onnx", Path("g.onnx"))

Every format maps z (B, nz, 1, 1) to images (B, C, S, S) in [-1, 1] with BatchNorm's running
statistics (eval mode), so each image depends on its own z only, as in `dcgan sample`:
- onnx: input "z", output "images", any batch size; made by `torch.onnx.export` (the torch.export-based
  exporter, the default since PyTorch 2.9; it needs the onnx and onnxscript packages);
- torchscript: `torch.jit.script`, loadable with `torch.jit.load` in Python or LibTorch (C++);
- safetensors: the generator's state_dict, with the ModelConfig in the file's metadata, so
  `load_safetensors_generator` (and `dcgan sample --checkpoint FILE.safetensors`) rebuilds it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from pathlib import Path

import torch

from . import __version__
from .checkpoint import load_weights
from .config import ModelConfig
from .errors import DcganError
from .models import Generator

FORMATS = ("onnx", "torchscript", "safetensors")
SAFETENSORS_FORMAT = "dcgan-generator-1"  # the metadata "format" value of a safetensors export
ONNX_EXAMPLE_BATCH = 2  # batch of the example input traced by the exporter; the batch axis stays dynamic


def _require(module: str, pip_names: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise DcganError(f"this export needs {pip_names}: pip install {pip_names} (or pip install 'dcgan[export]')") from None


@contextlib.contextmanager
def _quiet_exporter():
    """Silence what PyTorch's exporters print about themselves (deprecations inside torch, optional
    torchvision ops they skip); the user asked for this format, and errors still raise."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        onnx_logger.setLevel(level)


def export_generator(generator: Generator, fmt: str, out: Path) -> str:
    """Write `generator` (copied to CPU, eval mode) to `out` in `fmt`; returns a one-line description."""
    if fmt not in FORMATS:
        raise DcganError(f"unknown export format '{fmt}': use one of {', '.join(FORMATS)}")
    out = Path(out)
    config = generator.config
    # a copy, so the caller's generator keeps its device and train/eval mode
    model = Generator(config)
    model.load_state_dict(generator.state_dict())
    model.eval()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        {"onnx": _onnx, "torchscript": _torchscript, "safetensors": _safetensors}[fmt](model, out)
    except OSError as error:
        raise DcganError(f"cannot write {out}: {error.strerror or error}") from None
    shape = f"z (B, {config.nz}, 1, 1) -> images (B, {config.channels}, {config.image_size}, {config.image_size}) in [-1, 1]"
    return f"generator exported to {out} ({fmt}): {shape}"


def _onnx(model: Generator, out: Path) -> None:
    _require("onnxscript", "onnx onnxscript")
    example = torch.zeros(ONNX_EXAMPLE_BATCH, model.config.nz, 1, 1)
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(out),
            input_names=["z"],
            output_names=["images"],
            dynamic_shapes={"z": {0: torch.export.Dim("batch")}},
            dynamo=True,  # explicit: the older TorchScript-based exporter (dynamo=False) is deprecated
            external_data=False,  # one self-contained file; a generator is far below protobuf's 2 GB limit
            verbose=False,
        )


def _torchscript(model: Generator, out: Path) -> None:
    with _quiet_exporter():  # torch.jit is deprecated upstream but still the format LibTorch loads
        torch.jit.script(model).save(str(out))


def _safetensors(model: Generator, out: Path) -> None:
    _require("safetensors", "safetensors")
    from safetensors.torch import save_file

    metadata = {  # safetensors metadata is str -> str
        "format": SAFETENSORS_FORMAT,
        "version": __version__,
        "model": json.dumps(dataclasses.asdict(model.config), sort_keys=True),
    }
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(out), metadata=metadata)


def load_safetensors_generator(path: Path) -> Generator:
    """A Generator (eval mode) rebuilt from a safetensors export: architecture from the metadata, then weights."""
    _require("safetensors", "safetensors")
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise DcganError(f"file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state_dict = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise DcganError(f"cannot read {path}: not a safetensors file, or corrupt ({error})") from None
    if metadata.get("format") != SAFETENSORS_FORMAT:
        raise DcganError(f"{path} is a safetensors file without dcgan generator metadata (export it with dcgan export)")
    try:
        config = ModelConfig(**json.loads(metadata["model"]))
    except (KeyError, TypeError, ValueError) as error:
        raise DcganError(f"{path} has unreadable model metadata ({error})") from None
    generator = Generator(config)
    load_weights(generator, state_dict, f"generator weights in {path}")
    return generator.eval()
