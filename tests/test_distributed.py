"""Several processes (torchrun, gloo on the CPU): data shares, identical ranks, 1 vs 2 processes, resume, failures.

Two processes with batch 8 and --sync-bn must train as one process with batch 16: each step the two
shares make up that process's batch (the same permutation, sharded), the noise is the global batch's
z sliced per rank, DDP averages the gradients and BatchNorm normalises over the global batch.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import random_images, write_png_folder
from dcgan import checkpoint as ckpt
from dcgan import distributed
from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.data import Batches
from dcgan.errors import DcganError
from dcgan.train import Trainer

# fake data: 512 images; 2 processes x batch 8 = 16 images a step, 32 steps an epoch
STEPS = 6
TINY = dict(data="fake", image_size=16, nz=8, ngf=4, ndf=4, n_fixed=8, log_every=2, progress=False, device="cpu")
CLI_TINY = ["--data", "fake", "--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--device", "cpu", "--log-every", "2"]  # fmt: skip
TWO_PROCESSES = CLI_TINY + ["--batch-size", "8", "--sync-bn", "--checkpoint-every", "3"]

# `dcgan train` under torchrun, plus what a test needs: each rank's networks saved beside the run
# folder, and rank 1 made to crash, stall, or blow its weights up to NaN at its third step
WORKER = '''
import os, sys, time
import torch
import dcgan.train
from dcgan.cli import main

fault, argv = sys.argv[1], sys.argv[2:]
rank = int(os.environ["RANK"])
fit, step, calls = dcgan.train.Trainer.fit, dcgan.train.train_step, [0]

def fit_and_save_networks(trainer):
    run = fit(trainer)
    networks = {"generator": trainer.generator.state_dict(), "discriminator": trainer.discriminator.state_dict()}
    torch.save(networks, run.parent / f"{run.name}.rank{rank}.pt")
    return run

def faulty_step(state, real, z, **options):
    calls[0] += 1
    if calls[0] == 3 and fault == "crash":
        os._exit(1)
    if calls[0] == 3 and fault == "stall":
        time.sleep(6)  # twice the test's --dist-timeout 3
    figures = step(state, real, z, **options)
    if calls[0] == 3 and fault == "nan":
        with torch.no_grad():
            next(state.generator.parameters()).fill_(float("nan"))
        figures = figures * float("nan")
    return figures

dcgan.train.Trainer.fit = fit_and_save_networks
if fault == "count":  # how many images this rank decodes, written to decoded.rankN in the working folder
    import atexit, itertools
    import dcgan.data
    preprocess, decoded = dcgan.data.preprocess, itertools.count()  # next() is atomic: decoding runs in threads
    def counting_preprocess(*args):
        next(decoded)
        return preprocess(*args)
    dcgan.data.preprocess = counting_preprocess
    atexit.register(lambda: open(f"decoded.rank{rank}", "w").write(str(next(decoded))))
if rank == 1 and fault not in ("none", "count"):
    dcgan.train.train_step = faulty_step
sys.exit(main(argv))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, folder: Path, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "DCGAN_CACHE": str(folder / "cache"), "OMP_NUM_THREADS": "1"}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    launcher += ["--master-addr=127.0.0.1", f"--master-port={_free_port()}"]
    return subprocess.run(launcher + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=folder)


def _worker(folder: Path, fault: str, args, timeout=120) -> subprocess.CompletedProcess:
    script = folder / "worker.py"
    script.write_text(WORKER)
    return _torchrun([str(script), fault, "train", *args], folder, timeout)


def _rows(run):
    return [{k: v for k, v in r.items() if k != "time"} for r in map(json.loads, (run / "stats.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """6 steps by 2 processes with batch 8 and --sync-bn, a checkpoint every 3 steps."""
    folder = tmp_path_factory.mktemp("two")
    done = _worker(folder, "none", TWO_PROCESSES + ["--max-steps", str(STEPS), "--out", str(folder / "run")])
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run", done


# ---------------------------------------------------------------- data shares


@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_shares_make_up_the_single_process_batch(world):
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1).repeat(4, axis=1).repeat(4, axis=2)
    single = Batches(images, 5 * world, seed=3)
    shards = [Batches(images, 5, seed=3, rank=rank, world_size=world) for rank in range(world)]
    assert all(len(s) == len(single) == 100 // (5 * world) for s in shards)
    for epoch in (1, 2):
        for whole, *parts in zip(single.epoch(epoch), *(s.epoch(epoch) for s in shards)):
            for rank, part in enumerate(parts):  # DistributedSampler's assignment: every world-th from rank
                assert torch.equal(part, whole[rank::world])
            ids = torch.cat([part[:, 0, 0, 0] for part in parts])
            assert len(set(ids.tolist())) == 5 * world  # disjoint shares


def test_one_process_batches_are_the_permutation_in_order():
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    batches = Batches(images, 8, seed=1)
    order = batches.order(2).numpy()
    got = [b[:, 0, 0, 0] for b in batches.epoch(2)]
    assert len(got) == 6
    for index, batch in enumerate(got):
        expected = images[order[index * 8 : (index + 1) * 8], 0, 0, 0]
        assert torch.equal(batch, torch.from_numpy(expected).float().div(127.5).sub(1))


def test_a_short_last_global_batch_is_padded_from_the_epochs_start_like_distributed_sampler():
    images = np.arange(11, dtype=np.uint8).reshape(11, 1, 1, 1)
    shards = [Batches(images, 3, seed=0, drop_last=False, rank=rank, world_size=2) for rank in range(2)]
    epochs = [list(s.epoch(1)) for s in shards]
    assert [len(b) for b in epochs[0]] == [3, 3] and [len(b) for b in epochs[1]] == [3, 3]  # 6 + 5 images, one repeated
    seen = {round(v) for rank in epochs for batch in rank for v in ((batch[:, 0, 0, 0] + 1) * 127.5).tolist()}
    assert seen == set(range(11))


def test_a_global_batch_larger_than_the_data_is_one_clear_error():
    with pytest.raises(DcganError, match=r"global batch \(4 processes x batch size 200\) is larger than the data set"):
        Batches(np.zeros((512, 1, 1, 1), np.uint8), 200, seed=0, rank=0, world_size=4)


# ---------------------------------------------------------------- a single process is unchanged


def test_without_torchrun_there_is_one_process_and_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group(timeout_s=5) as processes:
        assert processes == distributed.Processes(0, 1, 0) and processes.is_main
        assert not torch.distributed.is_initialized()
        assert distributed.from_main(lambda: 7) == 7 and distributed.max_over_ranks(3) == 3
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.world_size() == 1 and distributed.is_main()


def test_torchrun_variables_without_a_process_group_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DcganError, match="started as one of 2 processes"):
        Trainer(TrainConfig(**{**TINY, "batch_size": 8, "out": str(tmp_path / "run")}), log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_cpu_sync_batchnorm_is_batchnorm_in_a_single_process():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    weight = plain[1].weight
    converted = distributed.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), torch.device("cpu"))
    converted.load_state_dict(plain.state_dict())
    assert isinstance(converted[1], distributed.CpuSyncBatchNorm) and converted.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(plain(x), converted(x))
    same = distributed.convert_sync_batchnorm(plain, torch.device("cpu"))
    assert same[1].weight is weight  # the optimizer's Parameter objects stay in place


def test_an_unavailable_device_is_one_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DcganError, match="PyTorch sees no CUDA GPU"):
        Trainer(TrainConfig(**{**TINY, "device": "cuda", "out": str(tmp_path / "run")}), log=lambda m: None)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- two processes


def test_two_processes_train_and_rank_0_alone_writes_and_prints(two_processes):
    run, done = two_processes
    assert [r["step"] for r in _rows(run)] == list(range(1, STEPS + 1))  # each row once: rank 1 wrote none
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "final.pt", "last.pt", "step_00000000.pt", "step_00000003.pt", "step_00000006.pt"
    ]  # fmt: skip
    assert done.stdout.count("global batch 16 (2 processes x batch 8, BatchNorm over the global batch)") == 1
    assert done.stdout.count(f"finished {STEPS} steps") == 1
    assert done.stderr.count(f"0/{STEPS} [") == 1  # one progress bar: rank 1 shows none
    final = ckpt.read_file(run / "checkpoints" / "final.pt")
    assert final["world_size"] == 2 and final["step"] == STEPS
    assert not any(k.startswith("module.") for k in final["generator"])  # bare state_dicts: they load anywhere


def test_both_ranks_hold_identical_networks(two_processes):
    run, _ = two_processes
    rank0, rank1 = (torch.load(run.parent / f"run.rank{r}.pt", weights_only=True) for r in (0, 1))
    for net in ("generator", "discriminator"):
        assert rank0[net].keys() == rank1[net].keys()
        assert all(torch.equal(rank0[net][k], rank1[net][k]) for k in rank0[net]), net  # parameters and BatchNorm buffers
    saved = ckpt.read_file(run / "checkpoints" / "final.pt")
    assert all(torch.equal(saved["generator"][k], rank0["generator"][k]) for k in saved["generator"])


@pytest.mark.parametrize("codes", [["--info-codes", "3"], ["--info-codes", "2,2,2", "--channel-codes", "--nz", "10"]])
def test_info_codes_under_two_processes_keep_the_ranks_identical(tmp_path, codes):
    # the code head is used by the fake half of the D step only: its gradient must still be all-reduced;
    # with --channel-codes D runs twice on the fakes (as drawn, and shuffled) before one backward pass
    args = CLI_TINY + ["--batch-size", "8", *codes, "--max-steps", "3", "--out", str(tmp_path / "run")]
    done = _worker(tmp_path, "none", args)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"run.rank{r}.pt", weights_only=True) for r in (0, 1))
    assert "code_head.weight" in rank0["discriminator"]
    for net in ("generator", "discriminator"):  # the weights; BatchNorm's running statistics are each rank's own
        weights = [k for k in rank0[net] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert all(torch.equal(rank0[net][k], rank1[net][k]) for k in weights), net


def test_two_processes_with_sync_bn_match_one_process_with_the_global_batch(two_processes, tmp_path):
    run, _ = two_processes
    config = TrainConfig(**{**TINY, "batch_size": 16, "max_steps": STEPS, "out": str(tmp_path / "one")})
    one = Trainer(config, log=lambda m: None).fit()
    a, b = ckpt.read_file(one / "checkpoints" / "final.pt"), ckpt.read_file(run / "checkpoints" / "final.pt")
    for net in ("generator", "discriminator"):
        for key in a[net]:
            # float32 sums in another order (two shares, then an all-reduce): about 1e-8 apart after 6 steps
            torch.testing.assert_close(b[net][key], a[net][key], rtol=1e-5, atol=1e-6, msg=f"{net} {key}")
    rows_one, rows_two = _rows(one), _rows(run)
    assert len(rows_one) == len(rows_two) == STEPS
    for row_one, row_two in zip(rows_one, rows_two):
        assert row_one["step"] == row_two["step"] and row_one["epoch"] == row_two["epoch"]
        assert row_two == pytest.approx(row_one, abs=1e-5)


def test_a_checkpoint_of_two_processes_samples_in_one_and_refuses_a_one_process_resume(two_processes, tmp_path, capsys):
    run, _ = two_processes
    assert main(["sample", "--run", str(run), "--n", "4", "--out", str(tmp_path / "grid.png")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max-steps", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "the run was trained by 2 process(es) and this is 1: resume it with 2 (torchrun --nproc_per_node ...)" in err
    assert [r["step"] for r in _rows(run)] == list(range(1, STEPS + 1))  # nothing was touched


def test_two_processes_resume_through_torchrun_bitwise_where_they_stopped(two_processes, tmp_path):
    reference, _ = two_processes
    run = tmp_path / "run"  # the reference run as it stood after its step-3 checkpoint
    shutil.copytree(reference, run, symlinks=True)
    for name in ("final.pt", "step_00000006.pt"):
        (run / "checkpoints" / name).unlink()
    resumed = _torchrun(["-m", "dcgan", "train", "--resume", str(run), "--no-progress"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count(f"resuming {run} from step_00000003.pt at step 3") == 1  # printed by rank 0 alone
    assert _rows(run) == _rows(reference)
    a, b = ckpt.read_file(run / "checkpoints" / "final.pt"), ckpt.read_file(reference / "checkpoints" / "final.pt")
    for key in ("generator", "discriminator"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for key in ("optimizer_g", "optimizer_d"):
        for slot_a, slot_b in zip(a[key]["state"].values(), b[key]["state"].values()):
            assert all(torch.equal(slot_a[k], slot_b[k]) for k in slot_a)


def test_spectral_norm_and_r1_with_two_processes_match_one_process_with_the_global_batch(tmp_path):
    # spectral norm's u, v buffers are the same on every rank (they depend on the weights only), and R1's
    # double backward runs inside no_sync, so DDP reduces its gradient with the rest of D's
    stabilisers = ["--spectral-norm", "--r1", "1", "--r1-every", "2", "--no-progress", "--max-steps", "4"]
    argv = ["-m", "dcgan", "train", *TWO_PROCESSES, *stabilisers, "--out", str(tmp_path / "two")]
    two = _torchrun(argv, tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    changes = {"batch_size": 16, "max_steps": 4, "spectral_norm": True, "r1": 1.0, "r1_every": 2, "out": str(tmp_path / "one")}
    config = TrainConfig(**{**TINY, **changes})
    one = Trainer(config, log=lambda m: None).fit()
    a, b = ckpt.read_file(one / "checkpoints" / "final.pt"), ckpt.read_file(tmp_path / "two" / "checkpoints" / "final.pt")
    for net in ("generator", "discriminator"):
        for key in a[net]:
            torch.testing.assert_close(b[net][key], a[net][key], rtol=1e-5, atol=1e-6, msg=f"{net} {key}")


# ---------------------------------------------------------------- a rank that fails


def test_the_first_process_of_a_machine_decodes_the_data_and_the_others_read_its_cache(tmp_path):
    photos = tmp_path / "photos"
    write_png_folder(photos, random_images(20, 16, 16, 1))
    args = ["--data", str(photos), *CLI_TINY[2:], "--batch-size", "4", "--max-steps", "2", "--out", str(tmp_path / "run")]
    done = _worker(tmp_path, "count", args)
    assert done.returncode == 0, done.stderr[-3000:]
    decoded = [int((tmp_path / f"decoded.rank{rank}").read_text()) for rank in (0, 1)]
    assert decoded == [20, 0]  # rank 1 reads back the cache rank 0 wrote: before, both decoded all 20


def test_data_that_fails_to_decode_stops_every_rank_with_one_line(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for index in range(3):
        (broken / f"img_{index}.png").write_bytes(b"not a png")
    done = _worker(tmp_path, "none", ["--data", str(broken), *CLI_TINY[2:], "--batch-size", "4", "--out", str(tmp_path / "run")])
    assert done.returncode != 0
    # each rank says it in one line, unless torchrun stops rank 1 first on rank 0's exit (and two lines may interleave)
    assert 1 <= done.stderr.count("dcgan: error: none of the 3 image files in broken could be decoded") <= 2, done.stderr[-3000:]
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr  # (torchrun prints its own)
    assert not (tmp_path / "run").exists()


def test_a_crashed_rank_stops_the_job_instead_of_hanging(tmp_path):
    started = time.monotonic()
    args = CLI_TINY + ["--batch-size", "8", "--no-progress", "--max-steps", "20", "--out", str(tmp_path / "run")]
    done = _worker(tmp_path, "crash", args)
    assert done.returncode != 0
    assert time.monotonic() - started < 60
    assert "[rank0]: Traceback" not in done.stderr  # rank 0 ends with one line (or torchrun stops it first)
    assert not (tmp_path / "run" / "checkpoints" / "final.pt").exists()


def test_a_stalled_rank_stops_the_others_after_the_timeout_with_one_line(tmp_path):
    args = CLI_TINY + ["--batch-size", "8", "--no-progress", "--max-steps", "20", "--dist-timeout", "3"]
    args += ["--out", str(tmp_path / "run")]
    done = _worker(tmp_path, "stall", args)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("dcgan: error: rank 0 lost contact")]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "collectives wait at most 3 s, --dist-timeout" in lines[0]


def test_a_nan_on_one_rank_rolls_every_rank_back_to_the_same_checkpoint(tmp_path):
    args = CLI_TINY + ["--batch-size", "8", "--no-progress", "--max-steps", "6", "--checkpoint-every", "2", "--log-every", "1"]
    done = _worker(tmp_path, "nan", args + ["--out", str(tmp_path / "run")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("non-finite loss at step 3: rolled back to step_00000002.pt (step 2); retry 1 of 3") == 1
    assert [r["step"] for r in _rows(tmp_path / "run")] == list(range(1, 7))
    rank0, rank1 = (torch.load(tmp_path / f"run.rank{r}.pt", weights_only=True) for r in (0, 1))
    g0, g1 = rank0["generator"], rank1["generator"]
    weights = [k for k in g0 if "running" not in k]  # without --sync-bn each rank keeps its own running statistics
    assert all(torch.isfinite(g0[k]).all() and torch.equal(g0[k], g1[k]) for k in weights)


# ---------------------------------------------------------------- GPUs (skipped without CUDA)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_gpu_trains_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    config = TrainConfig(**{**TINY, "device": "cuda", "batch_size": 16, "max_steps": 4, "out": str(tmp_path / "run")})
    trainer = Trainer(config, log=lambda m: None)
    assert next(trainer.state.generator.parameters()).is_cuda
    run = trainer.fit()
    assert main(["sample", "--run", str(run), "--n", "4", "--out", str(tmp_path / "grid.png")]) == 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_with_nccl_hold_identical_networks(tmp_path):
    args = [a for a in TWO_PROCESSES if a not in ("--device", "cpu")]
    args += ["--no-progress", "--max-steps", "4", "--out", str(tmp_path / "run")]
    done = _worker(tmp_path, "none", args)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"run.rank{r}.pt", weights_only=True, map_location="cpu") for r in (0, 1))
    assert all(torch.equal(rank0["generator"][k], rank1["generator"][k]) for k in rank0["generator"])


def test_a_missing_inception_file_stops_every_rank_with_its_own_line(tmp_path):
    # rank 0 alone builds the FID reference; the other ranks learn why it failed instead of losing contact with it
    args = CLI_TINY + ["--batch-size", "8", "--no-progress", "--max-steps", "2", "--eval-every", "1", "--eval-fid"]
    args += ["--inception-weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "run")]
    done = _worker(tmp_path, "none", args)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("dcgan: error:")]
    assert 1 <= len(errors) <= 2 and all("Inception weights file not found" in line for line in errors), done.stderr[-3000:]
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
