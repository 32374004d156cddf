"""Checkpoints: complete, self-describing, written atomically, loaded without running code.

A checkpoint is a dict of tensors and plain data (saved with `torch.save`, loaded with
`weights_only=True`, which refuses any pickle that would import or call something else):

    format, version, model (ModelConfig fields), config (TrainConfig fields), step, epoch,
    generator, discriminator, optimizer_g, optimizer_d (state_dicts), fixed_noise, rng
    best (with --eval-every): {metric, value, step, epoch, n} of the best evaluation so far

Weights-only files from the PyTorch DCGAN tutorial or the pytorch/examples script (a bare netG or
netD state_dict, keys `main.0.weight`, ...) load too; the architecture is read off their shapes.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from . import __version__
from .config import ModelConfig
from .errors import DcganError
from .models import Discriminator

FORMAT = "dcgan-checkpoint-1"
BEST_NAME = "best.pt"  # the checkpoint at the best evaluation (--eval-every): never rotated, never resumed from
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


def save_atomic(payload: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as error:
        raise DcganError(f"cannot write checkpoint {path}: {error.strerror or error}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def make_checkpoint(model: ModelConfig, config: dict, **state: Any) -> dict:
    return {"format": FORMAT, "version": __version__, "model": vars(model).copy(), "config": config, **state}


class UnreadableFile(Exception):
    """`load_tensors_only` failed; the caller words the line for its kind of file.

    calls: the function or class the file asked to call (refused), else None
    unpickler: True when the unpickler refused the contents, False when the bytes were damaged
    detail: the first line of the reason
    """

    def __init__(self, detail: str, calls: Optional[str] = None, unpickler: bool = False):
        super().__init__(detail)
        self.detail, self.calls, self.unpickler = detail, calls, unpickler


def load_tensors_only(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain data only, never code; UnreadableFile otherwise."""
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before failing on them: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        found = re.search(r"Unsupported global: GLOBAL (\S+)|unrecognized function (\S+)", text)
        if found:  # the file names a function or class to call: a weights-only load never does that
            raise UnreadableFile(text, calls=found.group(1) or found.group(2), unpickler=True) from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", text)
        raise UnreadableFile(reason.group(1) if reason else "unreadable", unpickler=True) from None
    except Exception as error:  # damaged bytes fail in many ways inside the unpickler; all mean the same here
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UnreadableFile(first[:160]) from None


def read_file(path: Path) -> Any:
    """A checkpoint or weights file, loaded with `load_tensors_only`; every failure is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DcganError(f"checkpoint not found: {path}")
    try:
        return load_tensors_only(path)
    except UnreadableFile as error:
        if error.calls:
            raise DcganError(f"refusing to load {path}: it asks to call {error.calls}; checkpoints hold only tensors and plain data") from None
        if error.unpickler:
            raise DcganError(f"cannot read {path}: not a checkpoint, or corrupt ({error.detail})") from None
        raise DcganError(f"cannot read {path}: truncated or corrupt ({error.detail})") from None


def strip_wrappers(state_dict: dict) -> dict:
    """Drop the `module.` / `_orig_mod.` prefixes that DataParallel, DDP and torch.compile add."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _conv_weights(state_dict: dict) -> list[torch.Tensor]:
    keys = [k for k, v in state_dict.items() if k.startswith("main.") and k.endswith(".weight") and v.ndim == 4]
    return [state_dict[k] for k in sorted(keys, key=lambda k: int(k.split(".")[1]))]


def infer_generator_config(state_dict: dict) -> ModelConfig:
    """Architecture of a tutorial-layout netG: main.0 is ConvT(nz, ngf*m, 4, 1, 0), the last ConvT(ngf, C)."""
    convs = _conv_weights(state_dict)
    if len(convs) < 3 or any(w.shape[2:] != (4, 4) for w in convs):
        raise DcganError("not a DCGAN generator state_dict (expected main.N.weight 4x4 transposed convolutions)")
    nz, first_width = convs[0].shape[:2]
    ngf, channels = convs[-1].shape[:2]
    image_size = 2 ** (len(convs) + 1)  # 4x4 after the first layer, doubled by each later one
    max_mult = max(1, first_width // ngf)
    return ModelConfig(image_size, channels, nz, ngf, 64, max_mult)


def infer_discriminator_config(state_dict: dict) -> ModelConfig:
    """Architecture of a tutorial-layout netD: main.0 is Conv(C, ndf), the last Conv(ndf*m, 1, 4, 1, 0)."""
    convs = _conv_weights(state_dict)
    if len(convs) < 3 or convs[-1].shape[0] != 1:
        raise DcganError("not a DCGAN discriminator state_dict (expected main.N.weight convolutions ending in 1 channel)")
    ndf, channels = convs[0].shape[:2]
    image_size = 2 ** (len(convs) + 1)
    max_mult = max(1, convs[-1].shape[1] // ndf)
    return ModelConfig(image_size, channels, 100, 64, ndf, max_mult)


def _discriminator_mismatch(module: torch.nn.Module, state_dict: dict) -> Optional[str]:
    """Why D weights do not fit, when the reason is --spectral-norm, --pack or --info-codes (a tutorial netD has none)."""
    if not isinstance(module, Discriminator):
        return None
    config, spectral = module.config, any(".parametrizations." in k for k in state_dict)
    head = next((v for k, v in state_dict.items() if k.startswith("code_head.") and k.endswith(("weight", "original"))), None)
    theirs = head.shape[0] if head is not None else 0
    if theirs != sum(config.info_codes):
        return f"guess {theirs} InfoGAN code categories in all, and this discriminator {sum(config.info_codes)} (--info-codes)"
    if spectral != config.spectral_norm:
        ours = "has it" if config.spectral_norm else "has none"
        theirs = "with" if spectral else "without"
        return f"come from a discriminator {theirs} spectral norm, and this one {ours} (--spectral-norm)"
    first = state_dict.get("main.0.parametrizations.weight.original", state_dict.get("main.0.weight"))
    packed = config.channels * config.pack
    if first is not None and first.ndim == 4 and first.shape[1] != packed and (config.pack > 1 or first.shape[1] not in (1, 3)):
        return (
            f"take {first.shape[1]} input channels, and this discriminator {packed}: "
            f"{config.pack} packed image(s) of {config.channels} (--pack)"
        )
    return None


def load_weights(module: torch.nn.Module, state_dict: dict, what: str) -> None:
    """load_state_dict with one readable line for a mismatch (wrong size, channels, or network)."""
    state_dict = strip_wrappers(state_dict)
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    variant = _discriminator_mismatch(module, state_dict) if missing or unexpected or wrong else None
    if variant:
        raise DcganError(f"{what} {variant}: train D like the run that made them, or start it afresh")
    if missing or unexpected or wrong:
        detail = (
            f"shape of {wrong[0]} is {tuple(state_dict[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}"
            if wrong
            else f"missing {missing[:2]}, unexpected {unexpected[:2]}"
        )
        raise DcganError(f"{what} does not fit this model ({detail}): check --image-size, --channels, --nz, --ngf/--ndf")
    module.load_state_dict(state_dict)


def load_network_weights(path: Path, which: str) -> tuple[dict, ModelConfig]:
    """The `which` ('generator' or 'discriminator') state_dict in `path`, and the architecture it implies.

    Accepts a dcgan checkpoint or a bare tutorial-layout state_dict.
    """
    return network_state(read_file(path), which, path)


def network_state(obj: Any, which: str, path: Path) -> tuple[dict, ModelConfig]:
    """The `which` state_dict and its architecture, from a loaded dcgan checkpoint or bare state_dict."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if which == "generator" and "generator_ema" in obj:
            return obj["generator_ema"], ModelConfig(**obj["model"])  # --ema-decay runs sample from the average
        return obj[which], ModelConfig(**obj["model"])
    if _is_state_dict(obj):
        state_dict = strip_wrappers(obj)
        infer = infer_generator_config if which == "generator" else infer_discriminator_config
        return state_dict, infer(state_dict)
    raise DcganError(f"{path} is neither a dcgan checkpoint nor a DCGAN state_dict")


# ---------------------------------------------------------------- run checkpoints: rotation, last, newest


def _step_of(path: Path) -> int:
    return int(path.stem.split("_")[1]) if path.stem.startswith("step_") else -1


def save_run_checkpoint(payload: dict, folder: Path, name: str, keep: int) -> Path:
    """Save atomically, point `last.pt` at it, then drop the oldest periodic ones beyond `keep`.

    The order matters: at every instant `last.pt` names a complete file, and a checkpoint is removed
    only once a newer one is in place.
    """
    path = folder / name
    save_atomic(payload, path)
    link = folder / "last.pt"
    tmp_link = folder / f".last.{os.getpid()}.tmp"
    try:
        if tmp_link.is_symlink():
            tmp_link.unlink()
        os.symlink(name, tmp_link)
        os.replace(tmp_link, link)
    except OSError as error:
        raise DcganError(f"cannot update {link}: {error.strerror or error}") from None
    periodic = sorted(folder.glob("step_*.pt"), key=_step_of)
    for old in periodic[: max(0, len(periodic) - max(keep, 1))]:
        if old.name != name:
            old.unlink()
    return path


def newest_good(folder: Path, log=print) -> tuple[Path, dict]:
    """The most recently written checkpoint in `folder` that loads (a damaged newest one is skipped).

    best.pt is left out: it is an older state kept for its samples, and a run goes on from its newest.
    """
    if not folder.is_dir():
        raise DcganError(f"no checkpoints folder in {folder.parent}")
    for leftover in folder.glob(".*.tmp"):  # a save that was killed half-way
        leftover.unlink()
    candidates = (p for p in folder.glob("*.pt") if not p.is_symlink() and p.name != BEST_NAME)
    files = sorted(candidates, key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in files:
        try:
            payload = read_file(path)
        except DcganError as error:
            log(f"skipping unreadable checkpoint: {error}")
            continue
        if isinstance(payload, dict) and payload.get("format") == FORMAT:
            return path, payload
    raise DcganError(f"no loadable checkpoint in {folder}")


def capture_rng(generators: dict) -> dict:
    """Every random state: python, numpy, torch CPU (and CUDA), and the given torch.Generators."""
    import random

    import numpy as np

    version, keys, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(keys), gauss],
        "numpy": {"keys": torch.from_numpy(np_keys.astype("int64")), "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generators: dict) -> None:
    import random

    import numpy as np

    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
