#!/usr/bin/env bash
# A short, prepared check for a machine with a CUDA GPU (never part of pytest's pass/fail):
#   1. the training step alone: images per second and peak GPU memory, at the tutorial's 64x64 x 3
#      with batch 128 unless told otherwise;
#   2. the training loop (`dcgan train --device cuda`) for a few steps on the `fake` data, then the
#      CUDA tests of tests/test_distributed.py (a 2-GPU one runs only where there are two GPUs).
# About a minute on one GPU.
#
#   benchmarks/gpu_check.sh [STEPS] [BATCH] [IMAGE_SIZE]        # defaults: 200 128 64
set -euo pipefail
steps=${1:-200}
batch=${2:-128}
size=${3:-64}
cd "$(dirname "$0")/.."

python - "$steps" "$batch" "$size" <<'PY'
import sys
import time

import torch

from dcgan.config import ModelConfig
from dcgan.models import build_models
from dcgan.step import GanState, train_step

steps, batch, size = (int(a) for a in sys.argv[1:4])
if not torch.cuda.is_available():
    sys.exit("gpu_check: PyTorch sees no CUDA GPU (a CPU build of torch, or no driver)")
device = torch.device("cuda")
torch.backends.cudnn.benchmark = True  # as the trainer does on a GPU
torch.manual_seed(0)
config = ModelConfig(image_size=size, channels=3)  # the tutorial's widths: nz 100, ngf = ndf = 64
generator, discriminator = (m.to(device) for m in build_models(config))
state = GanState(
    generator,
    discriminator,
    torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
    torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
)
real = torch.rand(batch, 3, size, size, device=device) * 2 - 1  # data already on the GPU: the step's own speed
z = torch.randn(batch, config.nz, 1, 1, device=device)
for _ in range(20):  # warm-up: cuDNN's algorithm search, the caching allocator
    train_step(state, real, z)
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
started = time.perf_counter()
for _ in range(steps):
    figures = train_step(state, real, z)
torch.cuda.synchronize()
seconds = time.perf_counter() - started
print(
    f"step: {torch.cuda.get_device_name()}, {size}x{size}x3, batch {batch}: "
    f"{steps * batch / seconds:,.0f} images/s ({1e3 * seconds / steps:.2f} ms a step); "
    f"peak memory {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB; figures finite: {bool(torch.isfinite(figures).all())}"
)
PY

run=$(mktemp -d)/run
dcgan train --data fake --image-size "$size" --batch-size "$batch" --device cuda --max-steps 40 --no-progress --out "$run"
python - "$run" "$batch" <<'PY'
import json
import sys
from pathlib import Path

rows = [json.loads(line) for line in (Path(sys.argv[1]) / "stats.jsonl").read_text().splitlines()]
batch, first, last = int(sys.argv[2]), rows[9], rows[-1]
rate = (last["step"] - first["step"]) * batch / (last["time"] - first["time"])
print(f"loop: {rate:,.0f} images/s over steps {first['step'] + 1}-{last['step']} (the 512-image fake set: a grid and a checkpoint every epoch)")
PY

# every precision through the loop: autocast bf16, and fp16 with its GradScalers, must train finitely
for precision in fp32 bf16 fp16; do
    dcgan train --data fake --image-size "$size" --batch-size "$batch" --device cuda --precision "$precision" \
        --max-steps 20 --no-progress --out "$(mktemp -d)/run-$precision" | grep -E "^precision|^finished"
done

python -m pytest -q tests/test_distributed.py -k "gpu"
