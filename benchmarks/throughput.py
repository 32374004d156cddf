"""Training throughput: the PyTorch DCGAN tutorial's loop against the toolkit's default path.

    python benchmarks/throughput.py                      # 64x64x3, batch 128, a generated JPEG folder
    python benchmarks/throughput.py --images 4096 --steps 10

Both sides read the same generated CelebA-like folder of JPEGs (178x218, as img_align_celeba).
(a) the tutorial, reproduced faithfully without torchvision: a Dataset that decodes, resizes and
    crops each JPEG every epoch, a DataLoader with workers, fp32 eager, Sigmoid + BCELoss,
    `.item()` reads every step;
(b) the toolkit's default path: `Trainer` on the same folder (decode once into the uint8 cache).
Each side runs in its own process, so its peak memory (max RSS) is its own. Printed: steady-state
step images/s (a fixed batch, no data loading), whole-epoch images/s (an epoch after the first,
data loading included), their ratios, achieved GFLOP/s against the fp32 matrix-multiply peak
measured in the same run, and peak memory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def make_jpeg_folder(folder: Path, count: int, seed: int = 0) -> None:
    """CelebA-like: 178x218 JPEGs of smooth random colour fields."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        path = folder / f"{index:06d}.jpg"
        if not path.exists():
            small = rng.integers(0, 256, size=(28, 23, 3), dtype=np.uint8)
            Image.fromarray(small).resize((178, 218), Image.BILINEAR).save(path, quality=90)


def matmul_peak_gflops(dtype=torch.float32, size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def step_flops(step, *args) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(*args)
    return counter.get_total_flops()


# ---------------------------------------------------------------- (a) the tutorial, as written


class TutorialFolder(torch.utils.data.Dataset):
    """ImageFolder + Resize(64) + CenterCrop(64) + ToTensor + Normalize(0.5): decodes on every access."""

    def __init__(self, folder: Path, size: int):
        self.files, self.size = sorted(folder.glob("*.jpg")), size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        from dcgan.data import preprocess  # the same resize and crop torchvision's transforms make

        image = preprocess(Image.open(self.files[index]).convert("RGB"), self.size, 3)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
        return (tensor - 0.5) / 0.5, 0


def tutorial_networks(nz=100, ngf=64, ndf=64, nc=3):
    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
    )  # fmt: skip
    netD = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )  # fmt: skip
    from dcgan.models import init_weights

    return netG.apply(init_weights), netD.apply(init_weights)


def run_tutorial(folder: Path, size: int, batch: int, steps: int, workers: int) -> dict:
    netG, netD = tutorial_networks()
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(real):
        netD.zero_grad()
        b = real.size(0)
        label = torch.full((b,), 1.0)
        output = netD(real).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = torch.randn(b, 100, 1, 1)
        fake = netG(noise)
        label.fill_(0.0)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()
        netG.zero_grad()
        label.fill_(1.0)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()
        return errD.item(), errG.item(), D_x, D_G_z1, D_G_z2

    loader = torch.utils.data.DataLoader(TutorialFolder(folder, size), batch_size=batch, shuffle=True, num_workers=workers)
    fixed = next(iter(loader))[0]
    flops = step_flops(step, fixed)
    step_seconds = _time_steps(lambda: step(fixed), steps)
    for real, _ in loader:  # the first epoch, then a timed one: the tutorial decodes every epoch
        step(real)
    started, images = time.perf_counter(), 0
    for real, _ in loader:
        step(real)
        images += len(real)
    return _result(batch, step_seconds, flops, images / (time.perf_counter() - started))


# ---------------------------------------------------------------- (b) the toolkit


def run_toolkit(folder: Path, size: int, batch: int, steps: int, cache: Path) -> dict:
    from dcgan.config import TrainConfig
    from dcgan.step import train_step
    from dcgan.train import Trainer

    out = Path(tempfile.mkdtemp()) / "run"
    config = TrainConfig(data=str(folder), image_size=size, channels=3, batch_size=batch, epochs=2, out=str(out),
                         cache_dir=str(cache), progress=False, keep=1)  # fmt: skip
    started = time.perf_counter()
    trainer = Trainer(config, log=lambda message: None)
    decode_seconds = time.perf_counter() - started
    trainer.fit()  # two epochs; the second one's duration, from stats.jsonl, is the whole-epoch figure
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    per_epoch = len(trainer.batches)
    epoch_seconds = rows[2 * per_epoch - 1]["time"] - rows[per_epoch - 1]["time"]
    real = trainer._to_device(next(iter(trainer.batches.epoch(1))))
    z = torch.randn(batch, 100, 1, 1)
    flops = step_flops(train_step, trainer.state, real, z)
    # each step's figures read back, as the tutorial's .item() calls do
    step_seconds = _time_steps(lambda: train_step(trainer.state, real, z).tolist(), steps)
    result = _result(batch, step_seconds, flops, per_epoch * batch / epoch_seconds)
    # a batch from the decoded cache (index, uint8 -> float, to the device) is made in the training loop itself:
    # its share of a step says what loader workers could overlap at most
    batches = itertools.chain.from_iterable(trainer.batches.epoch(epoch) for epoch in itertools.count(2))
    batch_seconds = _time_steps(lambda: trainer._to_device(next(batches)), steps)
    result.update(path=f"precision {trainer.precision}, channels_last {config.channels_last}", decode_once_seconds=round(decode_seconds, 1),
                  batch_ms=round(batch_seconds * 1e3, 2), batch_share=batch_seconds / step_seconds)  # fmt: skip
    return result


# ---------------------------------------------------------------- shared


def _time_steps(step, steps: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _result(batch: int, step_seconds: float, flops: int, epoch_images_per_s: float) -> dict:
    return {
        "step_images_per_s": batch / step_seconds,
        "gflops_per_s": flops / step_seconds / 1e9,
        "epoch_images_per_s": epoch_images_per_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="JPEGs in the generated folder (default 2048)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed steady-state steps (median reported)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="tutorial DataLoader workers")
    parser.add_argument("--folder", help="an existing JPEG folder to use instead")
    parser.add_argument("--part", choices=("tutorial", "toolkit"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:  # a child process: one side, one JSON line
        torch.manual_seed(0)
        folder = Path(args.folder)
        if args.part == "tutorial":
            result = run_tutorial(folder, args.size, args.batch, args.steps, args.workers)
        else:
            result = run_toolkit(folder, args.size, args.batch, args.steps, Path(args.cache))
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="dcgan-bench-"))
    folder = Path(args.folder) if args.folder else work / "img_align_celeba"
    if not args.folder:
        make_jpeg_folder(folder, args.images)
    peak = matmul_peak_gflops()
    peak_bf16 = matmul_peak_gflops(torch.bfloat16)
    results = {}
    for part in ("tutorial", "toolkit"):
        command = [sys.executable, __file__, "--part", part, "--folder", str(folder), "--size", str(args.size),
                   "--batch", str(args.batch), "--steps", str(args.steps), "--workers", str(args.workers), "--cache", str(work / "cache")]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[part] = json.loads(output.strip().splitlines()[-1])

    tutorial, toolkit = results["tutorial"], results["toolkit"]
    print(f"{args.size}x{args.size}x3, batch {args.batch}, {len(list(folder.glob('*.jpg')))} JPEGs; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; fp32 matmul peak {peak:.0f} GFLOP/s (bf16 {peak_bf16:.0f})")  # fmt: skip
    print(f"toolkit path: {toolkit['path']}; decode once into the cache: {toolkit['decode_once_seconds']} s; "
          f"a batch from the cache: {toolkit['batch_ms']} ms ({toolkit['batch_share']:.1%} of a step)")  # fmt: skip
    print(f"{'':32}{'tutorial':>12}{'toolkit':>12}{'ratio':>8}")
    for key, label in (("step_images_per_s", "step images/s"), ("epoch_images_per_s", "whole-epoch images/s"),
                       ("gflops_per_s", "GFLOP/s"), ("peak_rss_mib", "peak memory MiB (main process)")):  # fmt: skip
        print(f"{label:32}{tutorial[key]:>12.1f}{toolkit[key]:>12.1f}{toolkit[key] / tutorial[key]:>8.2f}")
    print(f"{'share of fp32 matmul peak':32}{tutorial['gflops_per_s'] / peak:>12.0%}{toolkit['gflops_per_s'] / peak:>12.0%}")


if __name__ == "__main__":
    main()
