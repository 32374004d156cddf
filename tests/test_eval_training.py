"""`dcgan train --eval-every`: evaluation rows, checkpoints/best.pt, resume, and training left exactly as it was."""

import json
import os
from pathlib import Path

import pytest
import torch

import dcgan.train
import dcgan.training_eval
from dcgan import checkpoint as ckpt
from dcgan.classifier import CLASSIFIER_VERSION, train_classifier
from dcgan.cli import main
from dcgan.config import ModelConfig, TrainConfig
from dcgan.evaluate import evaluate_run, score_generator
from dcgan.models import Generator
from dcgan.report import write_report
from dcgan.sources import load_mnist_digits
from dcgan.train import Trainer

from conftest import error_line

# digits: 1,797 images in batches of 256 -> 7 steps an epoch
TINY = dict(data="digits", image_size=16, nz=8, ngf=4, ndf=4, batch_size=256, n_fixed=8, log_every=5, progress=False, device="cpu")  # fmt: skip
CLI_TINY = ["--data", "digits", "--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch-size", "256", "--no-progress"]  # fmt: skip
EVAL_KEYS = {"step", "epoch", "eval_n", "eval_classes_present", "eval_confident", "eval_kl_uniform"}


@pytest.fixture(scope="module")
def quick_classifier():
    images, labels = load_mnist_digits()
    return train_classifier(images[:300], labels[:300], epochs=1)  # stands in for the cached one: wiring, not accuracy


@pytest.fixture(autouse=True)
def classifier_in_cache(_isolated_cache, quick_classifier):
    """The quick classifier as the cached one, in the cache conftest gives each test."""
    torch.set_num_threads(1)  # networks this small train several times faster without threads waiting on each other
    cache = Path(os.environ["DCGAN_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    ckpt.save_atomic(quick_classifier.state_dict(), cache / f"digit-classifier-v{CLASSIFIER_VERSION}.pt")


def _run(tmp_path, name, **changes):
    return Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / name), **changes}), log=lambda message: None).fit()


def _rows(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def _training_rows(run):
    return [{k: v for k, v in r.items() if k != "time"} for r in _rows(run) if "loss_d" in r]


def _eval_rows(run):
    return [r for r in _rows(run) if "eval_n" in r]


def test_evaluations_are_logged_and_best_pt_is_the_best_one(tmp_path, capsys):
    run = _run(tmp_path, "run", eval_every=2, eval_n=50, max_steps=16)  # epoch ends at 7 and 14, then 2 steps
    rows = _rows(run)
    assert [r["step"] for r in rows if "loss_d" in r] == list(range(1, 17))
    evaluations = _eval_rows(run)
    assert [(r["step"], r["epoch"]) for r in evaluations] == [(14, 2), (16, 3)]  # every 2nd epoch end, and the run's end
    for row in evaluations:
        assert set(row) == EVAL_KEYS and row["eval_n"] == 50
        assert rows[rows.index(row) - 1]["step"] == row["step"]  # right after its step's training row
    logged = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"], r["n"], r["seed"]) for r in logged] == [(14, 2, 50, 0), (16, 3, 50, 0)]
    assert [r["confident"] for r in logged] == [r["eval_confident"] for r in evaluations]
    assert all(sum(r["class_histogram"]) == 50 for r in logged)

    scores = [r["eval_confident"] for r in evaluations]
    best_row = evaluations[scores.index(max(scores))]  # the first of equal ones
    best = ckpt.read_file(run / "checkpoints" / "best.pt")
    assert best["step"] == best_row["step"]
    expected = {"metric": "confident", "value": max(scores), "step": best_row["step"], "epoch": best_row["epoch"], "n": 50}
    assert best["best"] == expected
    final = ckpt.read_file(run / "checkpoints" / "final.pt")
    assert final["best"] == best["best"]  # every later checkpoint carries the best so far

    newest, _ = ckpt.newest_good(run / "checkpoints")
    os.utime(run / "checkpoints" / "best.pt")  # even as the most recently touched file, best.pt is never resumed from
    assert ckpt.newest_good(run / "checkpoints")[0] == newest and newest.name == "final.pt"

    assert main(["sample", "--run", str(run), "--best", "--n", "4", "--out", str(tmp_path / "best.png")]) == 0
    best_pt = str(run / "checkpoints" / "best.pt")
    assert main(["sample", "--checkpoint", best_pt, "--n", "4", "--out", str(tmp_path / "best.npz")]) == 0
    page = write_report(run).read_text()  # the report shows evaluation rows beside the training ones
    assert "eval_confident" in page and "steps/s" in page and (run / "losses.png").is_file()
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--best", "--n", "50"]) == 0  # the z and n of the evaluations during training
    assert capsys.readouterr().out.startswith("best.pt: ")
    scored = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    assert scored["checkpoint"] == "best.pt" and "step" not in scored  # kept by a later rollback's truncation
    assert scored["confident"] == best["best"]["value"]  # best.pt's generator, scored again: the value it was kept for
    assert main(["eval", "--run", str(run), "--checkpoint", str(newest), "--n", "50"]) == 0  # a checkpoint named by path
    assert capsys.readouterr().out.startswith("final.pt: ")
    assert json.loads((run / "eval.jsonl").read_text().splitlines()[-1])["checkpoint"] == "final.pt"
    assert "give one" in error_line(capsys, ["eval", "--run", str(run), "--best", "--checkpoint", str(newest)])
    assert "step_00009999.pt" in error_line(capsys, ["eval", "--run", str(run), "--checkpoint", str(run / "checkpoints" / "step_00009999.pt")])
    for command in (["sample", "--out", "x.png"], ["eval"]):
        missing = error_line(capsys, [*command, "--run", str(tmp_path / "run-without"), "--best"])
        assert missing.endswith(f"run folder not found: {tmp_path / 'run-without'}")
    (tmp_path / "run-without").mkdir()
    assert "best.pt" in error_line(capsys, ["sample", "--run", str(tmp_path / "run-without"), "--best", "--out", "x.png"])
    assert "best.pt" in error_line(capsys, ["eval", "--run", str(tmp_path / "run-without"), "--best"])


def test_training_is_bitwise_the_same_with_or_without_evaluation(tmp_path):
    plain = _run(tmp_path, "plain", max_steps=15)
    evaluated = _run(tmp_path, "evaluated", max_steps=15, eval_every=1, eval_n=50)  # G itself draws the samples
    assert len(_eval_rows(evaluated)) == 3 and not _eval_rows(plain)
    assert _training_rows(plain) == _training_rows(evaluated)
    a, b = (ckpt.read_file(run / "checkpoints" / "final.pt") for run in (plain, evaluated))
    for key in ("generator", "discriminator"):  # BatchNorm's running statistics included
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # nor was the global stream drawn from


def test_the_last_evaluation_is_what_dcgan_eval_measures_on_the_ema(tmp_path):
    run = _run(tmp_path, "run", max_steps=7, ema_decay=0.9, eval_every=1, eval_n=50)
    (last,) = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    again = evaluate_run(run, n=50)  # final.pt's EMA generator, loaded afresh
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: last[k] for k in again if k != "seconds"}
    assert (last["step"], last["epoch"]) == (7, 1)


def test_score_generator_leaves_the_network_and_the_random_streams_alone(quick_classifier):
    generator = Generator(ModelConfig(16, 1, 8, 4, 4)).train()
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    rng = torch.get_rng_state()
    first = score_generator(generator, "digits", 20, 0, quick_classifier)
    assert generator.training and all(torch.equal(before[k], v) for k, v in generator.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    second = score_generator(generator, "digits", 20, 0, quick_classifier)
    assert {k: v for k, v in first.items() if k != "seconds"} == {k: v for k, v in second.items() if k != "seconds"}


def test_a_resumed_run_keeps_its_best_and_goes_on_from_its_newest_checkpoint(tmp_path, monkeypatch):
    scripted = []  # the `confident` of each evaluation in turn

    def fake_score(generator, kind, n, seed, classifier, *, fid=None, truncation=1.0):
        return {"n": n, "seed": seed, "classes_present": 10, "confident": scripted.pop(0), "kl_uniform": 0.1, "seconds": 0.0}

    monkeypatch.setattr(dcgan.training_eval, "score_generator", fake_score)
    scripted[:] = [0.9, 0.5]
    run = _run(tmp_path, "run", max_steps=14, eval_every=1, eval_n=50)  # evaluations at 7 and 14
    best_pt = run / "checkpoints" / "best.pt"
    assert ckpt.read_file(best_pt)["best"]["step"] == 7
    os.utime(best_pt, (2**31, 2**31))  # best.pt the newest file: the resume must still take final.pt

    messages = []
    scripted[:] = [0.7]  # worse than 0.9: best.pt stays
    Trainer.resume(run, log=messages.append, max_steps=21).fit()
    assert any(m.startswith("resuming") and "from final.pt at step 14" in m for m in messages)
    assert [r["step"] for r in _training_rows(run)] == list(range(1, 22))
    assert [r["step"] for r in _eval_rows(run)] == [7, 14, 21]
    assert ckpt.read_file(best_pt)["best"] == {"metric": "confident", "value": 0.9, "step": 7, "epoch": 1, "n": 50}

    scripted[:] = [0.95]
    Trainer.resume(run, log=messages.append, max_steps=28).fit()
    best = ckpt.read_file(best_pt)
    assert best["step"] == 28 and best["best"]["value"] == 0.95
    assert any("new best confident" in m for m in messages) and not scripted

    scripted[:] = [0.1]  # another --best-metric: the old best is not comparable, so the next evaluation starts anew
    Trainer.resume(run, log=messages.append, max_steps=35, best_metric="kl_uniform").fit()
    assert ckpt.read_file(best_pt)["best"] == {"metric": "kl_uniform", "value": 0.1, "step": 35, "epoch": 5, "n": 50}


def test_under_torchrun_rank_0_alone_evaluates(tmp_path):
    from test_distributed import _torchrun  # its processes use tmp_path / "cache", where classifier_in_cache put the classifier

    run = tmp_path / "run"  # 2 processes x batch 256: 3 steps an epoch
    args = ["-m", "dcgan", "train", *CLI_TINY, "--device", "cpu", "--max-steps", "4", "--eval-every", "1", "--eval-n", "50"]
    done = _torchrun(args + ["--out", str(run)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(r["step"], r["epoch"]) for r in _eval_rows(run)] == [(3, 1), (4, 2)]  # each once: rank 1 wrote none
    assert len((run / "eval.jsonl").read_text().splitlines()) == 2 and done.stdout.count("evaluation at step") == 2
    assert ckpt.read_file(run / "checkpoints" / "best.pt")["best"]["step"] == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eval-every", "0"], "eval_every must be at least 1"),
        (["--eval-every", "1", "--eval-n", "1"], "eval_n must be at least 2"),
        (["--eval-n", "100"], "add eval_every"),
        (["--eval-every", "1", "--best-metric", "modes"], "--best-metric modes is not measured here"),
        (["--eval-every", "1", "--best-metric", "fid"], "--best-metric fid is not measured here"),  # needs --eval-fid
        (["--eval-every", "1", "--best-metric", "sharpness"], "unknown --best-metric 'sharpness'"),
        (["--eval-every", "1", "--data", "fake"], "colour data (fake)"),
    ],
)
def test_bad_evaluation_options_are_one_line_before_anything_is_made(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert message in error_line(capsys, ["train", *CLI_TINY, "--out", str(out), *argv])
    assert not out.exists()


# ---------------------------------------------------------------- eval.jsonl after a rollback or a resume


def _quick_scores(monkeypatch):
    def fake_score(generator, kind, n, seed, classifier, *, fid=None, truncation=1.0):  # wiring, not quality: no sampling, no classifier
        return {"n": n, "seed": seed, "classes_present": 10, "confident": 0.5, "kl_uniform": 0.1, "seconds": 0.0}

    monkeypatch.setattr(dcgan.training_eval, "score_generator", fake_score)


def _logged_steps(run):
    return [json.loads(line).get("step") for line in (run / "eval.jsonl").read_text().splitlines()]


def test_a_resume_from_an_earlier_checkpoint_drops_the_evaluations_it_redoes(tmp_path, monkeypatch):
    _quick_scores(monkeypatch)
    run = _run(tmp_path, "run", max_steps=14, eval_every=1, eval_n=50)  # evaluations at 7 and 14
    for name in ("step_00000014.pt", "final.pt", "last.pt"):  # killed after the evaluation at 14, before its checkpoint
        (run / "checkpoints" / name).unlink()
    with open(run / "eval.jsonl", "a") as f:
        f.write(json.dumps({"n": 50, "seed": 0, "confident": 0.4}) + "\n")  # a `dcgan eval --run` row: no step, kept
        f.write('{"step": 14, "epo')  # a row cut short by the kill
    messages = []
    Trainer.resume(run, log=messages.append).fit()
    assert any("from step_00000007.pt at step 7" in m for m in messages)
    assert _logged_steps(run) == [7, None, 14]
    assert [r["step"] for r in _eval_rows(run)] == [7, 14]


def test_a_rollback_drops_the_evaluations_it_redoes(tmp_path, monkeypatch):
    _quick_scores(monkeypatch)
    run, real_step, calls = tmp_path / "run", dcgan.train.train_step, {"n": 0}

    def poisoned(state, real, z, **options):  # step 17 blows G up while step_00000014.pt is damaged: back to step 7
        calls["n"] += 1
        figures = real_step(state, real, z, **options)
        if calls["n"] == 17:
            newest = run / "checkpoints" / "step_00000014.pt"
            newest.write_bytes(newest.read_bytes()[:100])
            figures = figures * float("nan")
        return figures

    monkeypatch.setattr(dcgan.train, "train_step", poisoned)
    messages = []
    Trainer(TrainConfig(**{**TINY, "out": str(run), "max_steps": 21, "eval_every": 1, "eval_n": 50}), log=messages.append).fit()
    assert any("rolled back to step_00000007.pt (step 7)" in m for m in messages)
    assert _logged_steps(run) == [7, 14, 21]
    assert [r["step"] for r in _eval_rows(run)] == [7, 14, 21]
