"""The gradient-flow lesson, measured: each strategy's facts on a tiny model, and the command's seams."""

import argparse
import contextlib
import json

import pytest
import torch

from dcgan.config import ModelConfig
from dcgan.errors import DcganError
from dcgan.why_detach import FIELD_NAMES, STRATEGIES, SavedTensorMeter, compare_strategies, format_table
from dcgan.why_detach_cli import add_parser, run

TINY = ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4)
TINY_ARGS = ["--image-size", "16", "--channels", "1", "--nz", "8", "--ngf", "4", "--ndf", "4"]
TINY_ARGS += ["--batch-size", "8", "--repeats", "1"]


@contextlib.contextmanager
def _one_thread():
    # a model this small gains nothing from two threads, and loses a lot when another process holds a core
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _single_threaded():
    with _one_thread():
        yield


@pytest.fixture(scope="module")
def rows():
    with _one_thread():
        return {row["strategy"]: row for row in compare_strategies(TINY, batch_size=8, seed=0, repeats=1)}


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["why-detach", *argv])


def test_every_strategy_reports_every_field(rows):
    assert list(rows) == list(STRATEGIES)
    assert all(set(row) == set(FIELD_NAMES) for row in rows.values())


def test_detach_sends_nothing_into_g_and_leaves_d_alone_in_the_g_step(rows):
    detach = rows["detach"]
    assert detach["ok"] and detach["error"] is None
    assert detach["g_grad_after_d_step"] == 0.0
    assert detach["d_changed_in_g_step"] is False
    assert detach["same_update_as_detach"] is True and detach["max_abs_diff_vs_detach"] == 0.0
    assert detach["g_bn_updates"] == 1
    assert detach["saved_tensor_bytes"] > 0 and detach["ms_per_step"] > 0


def test_no_detach_fails_in_the_g_step(rows):
    failed = rows["no-detach"]
    assert failed["ok"] is False
    assert "backward through the graph a second time" in failed["error"]
    assert failed["g_grad_after_d_step"] > 0  # the D loss reached G before the graph was freed
    assert failed["same_update_as_detach"] is None and failed["max_abs_diff_vs_detach"] is None
    assert failed["ms_per_step"] is None


def test_retain_graph_computes_g_gradients_it_throws_away(rows):
    retained = rows["retain-graph"]
    assert retained["ok"] and retained["g_grad_after_d_step"] > 0
    assert retained["same_update_as_detach"] is True and retained["max_abs_diff_vs_detach"] <= 1e-6


def test_regenerate_runs_g_twice(rows):
    regenerated = rows["regenerate"]
    assert regenerated["ok"] and regenerated["g_grad_after_d_step"] == 0.0
    assert regenerated["g_bn_updates"] == 2 and rows["detach"]["g_bn_updates"] == 1
    # the no_grad G forward keeps nothing for backward, so the D step holds less than detach's
    assert regenerated["d_step_saved_tensor_bytes"] < rows["detach"]["d_step_saved_tensor_bytes"]


def test_freeze_d_gives_the_same_update(rows):
    frozen = rows["freeze-d"]
    assert frozen["ok"] and frozen["d_changed_in_g_step"] is False
    assert frozen["same_update_as_detach"] is True and frozen["max_abs_diff_vs_detach"] <= 1e-6


def test_meter_counts_a_shared_storage_once_and_drops_it_after_backward():
    weight = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(3, 4)
    with SavedTensorMeter(exclude=[weight]) as meter:
        hidden = torch.tanh(x @ weight)  # saves x (48 bytes); the weight is excluded; tanh saves hidden (48 bytes)
        loss = (hidden * hidden).sum()  # saves hidden twice more: the same storage, counted once
        assert meter.current == 96
        loss.backward()
    assert meter.peak == 96 and meter.current == 0


def test_json_output_parses_with_the_field_names(capsys):
    assert run(_parse([*TINY_ARGS, "--strategies", "detach,regenerate", "--json"])) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert [row["strategy"] for row in parsed] == ["detach", "regenerate"]
    assert all(list(row) == list(FIELD_NAMES) for row in parsed)


def test_table_names_the_configuration_and_the_error(rows, capsys):
    table = format_table(list(rows.values()))
    assert table.splitlines()[0].startswith("strategy")
    assert "no-detach failed: Trying to backward through the graph a second time" in table
    assert format_table(list(rows.values()), markdown=True).startswith("| strategy |")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strategies", "detach,detatch"], "unknown strategy 'detatch'"),
        (["--strategies", " , "], "--strategies is empty"),
        (["--image-size", "48"], "image size 48 is not supported"),
        (["--channels", "2"], "channels must be 1"),
        (["--batch-size", "0"], "batch size must be at least 1"),
        (["--repeats", "0"], "repeats must be at least 1"),
    ],
)
def test_bad_values_raise_one_line_dcgan_errors(argv, message):
    with pytest.raises(DcganError) as caught:
        run(_parse([*TINY_ARGS, *argv]))
    assert message in str(caught.value) and "\n" not in str(caught.value)
