"""`dcgan report RUN`: one self-contained HTML page about a run, RUN/report.html.

The page works offline and can be mailed as one file: every image is embedded as a data: URI, the
CSS and the one small script (the slider over the fixed-noise grids) are inline, nothing is fetched.
It shows what the run folder holds, and leaves out what it does not:

    timing            steps, epochs, training time and steps/s, from stats.jsonl
    losses            G and D loss against step (drawn from stats.jsonl, so it is current mid-run)
    fixed noise       samples/*.png, one grid per epoch, with a slider
    real vs fake      real_vs_fake.png
    evaluation        stats.jsonl keys beyond the training figures, and the rows of any other
                      *.json / *.jsonl file at the top of the run folder (metrics written by evaluation)
    configuration     config.json
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from .errors import DcganError
from .plots import save_loss_plot
from .run_files import StatsLog, read_config_values, replace_atomic
from .step import CODE_FIGURE, FIGURE_NAMES

TRAINING_KEYS = ("step", "epoch", *FIGURE_NAMES, CODE_FIGURE, "time")  # a stats.jsonl row's own keys; any other is a metric
RUN_OWN_FILES = ("config.json", "stats.jsonl")  # shown in their own sections, not as metric files
GRID_DISPLAY_WIDTH = 512  # small grids are enlarged (whole multiples, pixelated) to about this many pixels
MAX_CELL_CHARS = 120  # longer values (lists, nested objects) are cut in tables

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; } img.grid { image-rendering: pixelated; }
figure { margin: 0.5em 0; } figcaption { color: #555; font-size: 0.9em; }
.slider { display: flex; gap: 1em; align-items: center; } .slider input { flex: 1; max-width: 512px; }
.note { color: #555; }
"""

# Shows one fixed-noise grid at a time. Without script every grid but the last stays hidden,
# so the page still shows the final samples.
SLIDER_SCRIPT = """
(function () {
  var slider = document.getElementById("grid-slider");
  if (!slider) { return; }
  var figures = document.querySelectorAll("#grids figure");
  var label = document.getElementById("grid-label");
  function show(index) {
    for (var k = 0; k < figures.length; k++) { figures[k].hidden = (k !== index); }
    label.textContent = figures[index].getAttribute("data-label");
  }
  slider.addEventListener("input", function () { show(Number(slider.value)); });
  show(Number(slider.value));
})();
"""


def write_report(run_dir: Path) -> Path:
    """Write RUN/report.html (replacing an older one atomically) and return its path."""
    run_dir = Path(run_dir)
    config = read_config_values(run_dir)
    rows = StatsLog(run_dir / "stats.jsonl").rows()
    sections = [
        _timing(rows),
        _losses(rows),
        _grids(sorted((run_dir / "samples").glob("*.png"))),
        _image_section("Real vs fake", run_dir / "real_vs_fake.png", "real training images beside the last fixed-noise fakes"),
        _metrics(rows, run_dir),
        "<h2>Configuration</h2>\n" + _key_value_table(sorted(config.items())),
    ]
    title = f"DCGAN run {run_dir.resolve().name}"
    page = (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_text(title)}</h1>\n<p class=\"note\">{_text(str(run_dir))}: data {_text(str(config.get('data')))}, "
        f"{_text(_size(config))}</p>\n"
        + "\n".join(section for section in sections if section)
        + f"\n<script>{SLIDER_SCRIPT}</script>\n</body>\n</html>\n"
    )
    out = run_dir / "report.html"
    try:
        replace_atomic(out, page)
    except OSError as error:
        raise DcganError(f"cannot write {out}: {error.strerror or error}") from None
    return out


# ---------------------------------------------------------------- sections


def _timing(rows: list[dict]) -> str:
    rows = [r for r in rows if "step" in r and "time" in r]  # training rows; evaluation rows may carry neither
    if not rows:
        return "<h2>Timing</h2>\n<p class=\"note\">no training steps logged yet (stats.jsonl is empty or missing)</p>"
    last = rows[-1]
    seconds = float(last["time"])  # training seconds since the start, across resumes
    items = [("steps", last["step"]), ("epoch of the last step", last.get("epoch")), ("training time", _duration(seconds))]
    if seconds > 0:
        items += [("steps/s", f"{last['step'] / seconds:.2f}"), ("seconds/step", f"{seconds / last['step']:.4f}")]
    return "<h2>Timing</h2>\n" + _key_value_table(items)


def _losses(rows: list[dict]) -> str:
    rows = [r for r in rows if all(name in r for name in ("loss_g", "loss_d"))]
    if not rows:
        return ""
    with tempfile.TemporaryDirectory() as folder:  # drawn afresh, so a run still training shows its latest steps
        path = Path(folder) / "losses.png"
        save_loss_plot([r["step"] for r in rows], [r["loss_g"] for r in rows], [r["loss_d"] for r in rows], path)
        plot = path.read_bytes()
    last = rows[-1]
    figures = [(name, last[name]) for name in (*FIGURE_NAMES, CODE_FIGURE) if name in last]
    return (
        "<h2>Losses</h2>\n"
        + _img(plot, "loss plot")
        + f"\n<p>figures at step {last['step']}:</p>\n"
        + _key_value_table(figures)
    )


def _grids(paths: list[Path]) -> str:
    if not paths:
        return ""
    figures = []
    for index, path in enumerate(paths):
        label = _grid_label(path)
        hidden = "" if index == len(paths) - 1 else " hidden"
        figures.append(
            f'<figure data-label="{_text(label)}"{hidden}>{_img(path.read_bytes(), f"fixed-noise grid, {label}", grid=True)}'
            f"<figcaption>{_text(label)} ({_text(path.name)})</figcaption></figure>"
        )
    last = len(paths) - 1
    return (
        "<h2>Fixed noise</h2>\n"
        '<p class="note">the same noise vectors after each epoch (BatchNorm in eval mode)</p>\n'
        f'<div class="slider"><input type="range" id="grid-slider" min="0" max="{last}" value="{last}" step="1" '
        f'aria-label="grid"><span id="grid-label">{_text(_grid_label(paths[-1]))}</span></div>\n'
        f'<div id="grids">{"".join(figures)}</div>'
    )


def _grid_label(path: Path) -> str:
    kind, _, number = path.stem.partition("_")
    return f"{kind} {int(number)}" if number.isdigit() else path.stem


def _image_section(title: str, path: Path, caption: str) -> str:
    if not path.is_file():
        return ""
    return f"<h2>{_text(title)}</h2>\n<figure>{_img(path.read_bytes(), title)}<figcaption>{_text(caption)}</figcaption></figure>"


def _metrics(rows: list[dict], run_dir: Path) -> str:
    """Whatever was measured besides the training figures: extra stats.jsonl keys, other JSON files."""
    parts = []
    metric_rows = [r for r in rows if set(r) - set(TRAINING_KEYS)]
    if metric_rows:
        parts.append("<h3>stats.jsonl</h3>\n" + _rows_table(metric_rows, lead=("step", "epoch")))
    for path in sorted(run_dir.glob("*.json")) + sorted(run_dir.glob("*.jsonl")):
        if path.name in RUN_OWN_FILES:
            continue
        table = _file_table(path)
        if table:
            parts.append(f"<h3>{_text(path.name)}</h3>\n{table}")
    if not parts:
        return ""
    return "<h2>Evaluation</h2>\n" + "\n".join(parts)


def _file_table(path: Path) -> str:
    text = path.read_text(errors="replace")
    try:
        if path.suffix == ".jsonl":
            values: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            values = json.loads(text)
    except ValueError:
        return '<p class="note">not valid JSON</p>'
    if isinstance(values, dict):
        return _key_value_table(sorted(values.items()))
    if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
        return _rows_table(values, lead=("step", "epoch"))
    return f"<p>{_text(_cell(values))}</p>"


# ---------------------------------------------------------------- HTML pieces


def _img(data: bytes, alt: str, grid: bool = False) -> str:
    """An <img> holding `data` (PNG) as a data: URI, with its size, so the page needs no other file."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.verify()
    except (OSError, SyntaxError):  # PIL's ways of saying "not a readable PNG" (a file cut short by a kill)
        return f'<p class="note">{_text(alt)}: the image file is unreadable</p>'
    scale = max(1, GRID_DISPLAY_WIDTH // width) if grid else 1
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    css_class = ' class="grid"' if grid else ""
    return f'<img{css_class} src="{uri}" alt="{_text(alt)}" width="{width * scale}" height="{height * scale}">'


def _key_value_table(items: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_text(str(key))}</th>{_td(value)}</tr>" for key, value in items)
    return f"<table>{body}</table>"


def _rows_table(rows: list[dict], lead: tuple[str, ...] = ()) -> str:
    columns = [key for key in lead if any(key in r for r in rows)]
    for row in rows:
        columns += [key for key in row if key not in columns]
    head = "".join(f"<th>{_text(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_td(row.get(c)) for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td{" class=num" if numeric else ""}>{_text(_cell(value))}</td>'


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (str, int)):
        return str(value)
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def _text(value: str) -> str:
    return html.escape(value, quote=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d} ({seconds:.1f} s)"


def _size(config: dict) -> str:
    size, channels = config.get("image_size"), config.get("channels")
    return f"{size}x{size}x{channels}" if size and channels else "size from the data"
