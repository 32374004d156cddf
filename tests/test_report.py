"""The HTML report: self-contained, shows what the run holds, and loads cleanly in a real browser."""

import html
import json
import re
import shutil
import subprocess

import pytest

from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.errors import DcganError
from dcgan.report import write_report
from dcgan.train import Trainer

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    # 512 fake images in batches of 64: 8 steps an epoch, so 16 steps leave two epoch grids
    config = TrainConfig(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=64, max_steps=16, n_fixed=8, progress=False, out=str(out))
    run = Trainer(config, log=lambda m: None).fit()
    # what an evaluation adds: a stats row with keys beyond the training figures, and a metrics file
    with open(run / "stats.jsonl", "a") as f:
        f.write(json.dumps({"step": 16, "epoch": 2, "fid": 123.25}) + "\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 16, "classes_present": 7, "class_histogram": [1, 2, 3]}) + "\n")
    write_report(run)
    return run


def test_report_is_self_contained_and_shows_the_run(run):
    page = (run / "report.html").read_text()
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert len(sources) == 4  # loss plot, two epoch grids, real vs fake
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script src" not in page and "http://" not in page and "https://" not in page
    assert "epoch 1" in page and "epoch 2" in page and 'max="1"' in page  # the slider over both grids
    assert "steps/s" in page and "training time" in page
    assert "fid" in page and "123.25" in page  # the extra stats.jsonl key
    assert "metrics.jsonl" in page and "classes_present" in page and "[1,2,3]" in page
    assert html.escape(str(run)) in page and "&quot;fake&quot;" not in page  # config values as text


def test_report_of_a_run_without_steps(tmp_path):
    (tmp_path / "config.json").write_text(TrainConfig(data="fake").to_json())
    page = write_report(tmp_path).read_text()
    assert "no training steps logged yet" in page and "<img" not in page


def test_report_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(DcganError, match="not a run folder"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dcgan: error: run folder not found: {tmp_path / 'nowhere'}"


def test_report_through_the_cli(run, capsys):
    assert main(["report", str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out


# Injected as the first script of a copy of the page, so it is in place before the page's own
# script runs. It records, in the page itself:
# - every "error" event, listened to in the capture phase: uncaught script errors, and images or
#   other resources that fail to load (those never reach the console log on stderr);
# - every console.error / console.warn call;
# - after the load event: each image's complete && naturalWidth > 0 (decoded, not just present);
# - the slider: moved to the first grid, exactly one grid shown and the label following it.
# The result goes into <body data-check="..."> and is read back from --dump-dom.
CHECK_SCRIPT = """<script>
window.__problems = [];
window.addEventListener("error", function (e) {
  window.__problems.push(e.message || ("failed to load " + (e.target && e.target.tagName) + " " + (e.target && e.target.alt)));
}, true);
["error", "warn"].forEach(function (level) {
  var original = console[level];
  console[level] = function () {
    window.__problems.push("console." + level + ": " + Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
});
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
                     .map(function (img) { return img.alt; });
  var slider = document.getElementById("grid-slider");
  slider.value = "0";
  slider.dispatchEvent(new Event("input"));
  var shown = Array.prototype.slice.call(document.querySelectorAll("#grids figure"))
                   .map(function (figure) { return !figure.hidden; });
  document.body.setAttribute("data-check", JSON.stringify({
    images: images.length, broken: broken, problems: window.__problems,
    shown: shown, label: document.getElementById("grid-label").textContent
  }));
});
</script>"""


def _chromium():
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_loads_in_headless_chromium(run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)}); install it: apt-get install -y chromium")
    page = (run / "report.html").read_text()
    head = '<meta charset="utf-8">'
    assert page.count(head) == 1
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace(head, head + CHECK_SCRIPT))
    command = [
        browser,
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        f"--user-data-dir={tmp_path / 'profile'}",
        # console messages (console.log too, and uncaught errors) go to stderr as ":CONSOLE" lines: a
        # second witness besides the in-page hooks, for anything logged before or around them
        "--enable-logging=stderr", "--v=0",
        # the DOM is dumped once this much virtual time has passed, well after the load event
        "--virtual-time-budget=10000",
        "--dump-dom", checked.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-check="([^"]*)"', result.stdout)
    assert found, f"no result from the page (status {result.returncode}); stderr ends:\n{result.stderr[-2000:]}"
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] == 4 and check["broken"] == []
    assert check["problems"] == []
    assert check["shown"] == [True, False] and check["label"] == "epoch 1"  # the page's slider script ran
    console = [line for line in result.stderr.splitlines() if re.search(r":CONSOLE[(:]", line)]
    assert console == [], "the page wrote to the console:\n" + "\n".join(console)
