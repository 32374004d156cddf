"""The run folder's plain files: where it goes, proving it writable, config.json and stats.jsonl."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Optional

from .config import TrainConfig
from .errors import DcganError


def default_run_dir(data_name: str, runs_root: Path = Path("runs"), now: Optional[datetime] = None) -> Path:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    candidate, n = runs_root / f"{data_name}-{stamp}", 1
    while candidate.exists():
        n += 1
        candidate = runs_root / f"{data_name}-{stamp}-{n}"
    return candidate


def prepare_run_dir(path: Path) -> Optional[Path]:
    """Create the run folder and prove it writable.

    Returns the outermost folder made here (the run folder, or the first of its parents that was
    missing, such as `runs/`), so a run that fails to start can remove all it made; None if the run
    folder was there already.
    """
    if path.exists() and not path.is_dir():
        raise DcganError(f"output path {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise DcganError(
            f"output folder {path} is not empty; choose a new --out so nothing saved there is overwritten "
            f"(or continue it: dcgan train --resume {path})"
        )
    made = None
    for folder in (path, *path.parents):  # from the run folder up to the outermost missing one
        if folder.exists():
            break
        made = folder
    probe = path / ".write-test"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise DcganError(f"cannot write to output folder {path}: {error.strerror or error}") from None
    return made


def read_config_values(run_dir: Path) -> dict:
    """RUN/config.json as a dict, or one clear DcganError."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise DcganError(f"run folder not found: {run_dir}")
    try:
        return json.loads(path.read_text())
    except OSError:
        raise DcganError(f"{run_dir} is not a run folder (no config.json)") from None
    except ValueError as error:
        raise DcganError(f"{path} is not valid JSON: {error}") from None


def read_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(read_config_values(run_dir))


def replace_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def truncate_rows(path: Path, step: int) -> None:
    """Drop the rows of a JSON-lines log (stats.jsonl, eval.jsonl) logged after `step`: a rollback or resume
    to that step redoes them and logs them again. Rows without a step (those of `dcgan eval`) are kept."""
    path = Path(path)
    if not path.exists():
        return
    text = path.read_text()
    lines = text.splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: nothing can read it, and the next row appended would be glued to it
        if not (isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step):
            kept.append(line)
    if kept != lines or not text.endswith("\n"):  # a last row cut just before its newline is complete, but unended
        replace_atomic(path, "".join(line + "\n" for line in kept))  # a kill mid-write leaves the old file whole


class StatsLog:
    """stats.jsonl: one JSON object per training step, appended in blocks."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, rows: list[dict]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(row) + "\n" for row in rows))

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a kill: everything after it is redone on resume
        return rows

    def truncate(self, step: int) -> None:
        """Keep the rows up to `step`: the steps after a checkpoint are logged again when redone."""
        truncate_rows(self.path, step)
