"""Several training processes (torchrun): the process group, who is who, and what the ranks share.

    torchrun --nproc_per_node=2 -m dcgan train ...    # sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT

    with process_group(timeout_s=600):                  # what `dcgan train` does around a Trainer (--dist-timeout)
        Trainer(config).fit()

Without WORLD_SIZE, or with WORLD_SIZE=1, `process_group` sets nothing up and every helper answers
for a single process (rank 0 of 1) without communicating: a plain `dcgan train` trains as before.

The group uses gloo for CPU tensors and, where CUDA is available, NCCL for GPU tensors. Every
collective waits at most `timeout_s`: a process that crashes closes its connections and the others
stop at once; one that stalls stops the others after the timeout. Either way each surviving process
ends with one line (`lost contact with the other processes: ...`) instead of hanging.

What the ranks share, and how (see train.py): the same weights (DDP broadcasts rank 0's and averages
the gradients), the same data permutation and noise stream, each rank taking its own share of each
global batch (`shard`), and the same checkpoint, read by rank 0 and handed to all (`from_main`).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator, Optional, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .config import TrainConfig
from .errors import DcganError

T = TypeVar("T")

# How a failed collective reads in gloo and NCCL (gloo raises a plain RuntimeError, NCCL a DistBackendError)
_COMMUNICATION_FAILURE = re.compile(r"timed out|timeout|closed by peer|pair closure|connection reset|broken pipe|nccl|gloo", re.I)


@dataclass(frozen=True)
class Processes:
    rank: int  # this process's index among all processes of the job, 0 .. world_size - 1
    world_size: int  # processes in the job, over all machines
    local_rank: int  # this process's index on its machine: the GPU it uses

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise DcganError(f"environment variable {name}={value!r} is not an integer") from None


def current() -> Processes:
    """Who this process is: from the process group when there is one, else rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    if _env_int("WORLD_SIZE", 1) > 1:  # started by torchrun, but nobody joined the group: K independent runs would collide
        raise DcganError(
            f"started as one of {os.environ['WORLD_SIZE']} processes (WORLD_SIZE) but no process group is set up: "
            "train inside `with dcgan.distributed.process_group():` (dcgan train does)"
        )
    return Processes(0, 1, 0)


def is_main() -> bool:
    return current().is_main


def world_size() -> int:
    return current().world_size


@contextmanager
def process_group(timeout_s: float = TrainConfig.dist_timeout) -> Iterator[Processes]:
    """Join the job's process group from the torchrun variables, and leave it at the end.

    A no-op for a single process, or when the caller already set a group up. A failed collective
    inside becomes one DcganError line.
    """
    if not dist.is_available() or _env_int("WORLD_SIZE", 1) <= 1 or dist.is_initialized():
        yield current()
        return
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise DcganError(f"WORLD_SIZE is set but {name} is not: start the processes with torchrun")
    local_rank = _env_int("LOCAL_RANK", 0)
    if torch.cuda.is_available():
        if local_rank < torch.cuda.device_count():  # before the first collective, so NCCL uses this process's GPU
            torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"  # each tensor's collective on its own device's backend
    else:
        backend = "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))  # env://: rendezvous at MASTER_ADDR:MASTER_PORT
    except (RuntimeError, ValueError) as error:
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise DcganError(f"cannot join the process group at {where}: {_first_line(error)}") from None
    try:
        yield current()
        # leave together: a rank that tears its gloo connections down while another is still writing its
        # last files can abort the whole job at exit ("terminate called without an active exception")
        dist.barrier()
    except RuntimeError as error:
        if isinstance(error, getattr(dist, "DistError", ())) or _COMMUNICATION_FAILURE.search(str(error)):
            raise DcganError(
                f"rank {dist.get_rank()} lost contact with the other processes: {_first_line(error)} (another process "
                f"crashed or stalled, see its messages; collectives wait at most {timeout_s:g} s, --dist-timeout)"
            ) from None
        raise
    finally:
        dist.destroy_process_group()


def _several() -> bool:
    """A process group of more than one process is set up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    text = re.sub(r"^\[[^\]]*\.(?:cpp|cc|h):\d+\]\s*", "", text)  # gloo prefixes its source file and line
    return text.split(". ")[0].rstrip(".")[:200]  # the first sentence; gloo's next ones give generic advice


def resolve_device(spec: Optional[str], processes: Processes) -> torch.device:
    """`--device`: None picks this process's GPU (cuda:LOCAL_RANK) when CUDA is available, else the CPU."""
    if spec is None:
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DcganError(f"unknown device '{spec}': use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DcganError(f"device '{spec}' is not supported: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DcganError(f"--device {spec}: PyTorch sees no CUDA GPU here (a CPU build of torch, or no driver)")
    index = processes.local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        visible = torch.cuda.device_count()
        raise DcganError(f"GPU {index} asked for, but only {visible} are visible: start at most {visible} processes a machine")
    return torch.device("cuda", index)


# ---------------------------------------------------------------- what the ranks share


def shard(global_batch: torch.Tensor, processes: Processes) -> torch.Tensor:
    """This rank's share of a global batch: every world_size-th item from position rank.

    DistributedSampler hands out the indices of an epoch the same way, so with per-rank batches of B
    the ranks' shares at one step together make up items [step*B*W, (step+1)*B*W) of the global order.
    """
    if not processes.is_distributed:
        return global_batch
    return global_batch[processes.rank :: processes.world_size]


def _attempt(compute: Callable[[], T]) -> tuple[Optional[T], Optional[BaseException], Optional[str]]:
    """(compute()'s result, None, None), or (None, the failure, the one line the other ranks stop with)."""
    try:
        return compute(), None, None
    except DcganError as error:
        return None, error, str(error)
    except Exception as error:  # a bug: the others stop too, this rank keeps the traceback
        return None, error, f"rank {dist.get_rank()} failed: {_first_line(error)}"


def from_main(compute: Callable[[], T]) -> T:
    """compute() run by rank 0 alone, its result handed to every rank (a DcganError there is raised everywhere).

    Rank 0 alone touches the run folder; the others get what it read (a configuration, a checkpoint),
    so every rank continues from the same state and no other machine needs the folder.
    """
    if not _several():
        return compute()
    box: list = [None]
    failure: Optional[BaseException] = None
    if dist.get_rank() == 0:
        value, failure, message = _attempt(compute)
        box[0] = ("value", value) if failure is None else ("error", message)
    dist.broadcast_object_list(box, src=0)  # pickled: the ranks of one job trust each other
    if failure is not None:
        raise failure
    kind, value = box[0]
    if kind == "error":
        raise DcganError(value)
    return value


def first_on_each_machine(compute: Callable[[], T]) -> T:
    """compute() on every rank, but on each machine's first process (LOCAL_RANK 0) before the others.

    For work that leaves its result on the machine's disk: the decoded-image cache is written once per
    machine and read back by the other processes there, instead of every process decoding every image
    at once. A failure in a first process (one line for a DcganError) stops every rank.
    """
    if not _several():
        return compute()
    first = current().local_rank == 0
    result, failure, message = _attempt(compute) if first else (None, None, None)
    messages: list = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)  # also the barrier: the first processes are done
    if failure is not None:
        raise failure
    reported = next((m for m in messages if m), None)
    if reported:
        raise DcganError(reported)
    return result if first else compute()


def average(values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the ranks: figures of the whole global batch, the same on every rank."""
    if not _several():
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


def max_over_ranks(value: int) -> int:
    """The largest `value` of all ranks, on every rank: decisions that change the step sequence must be shared."""
    if not _several():
        return value
    vote = torch.tensor([value])  # a CPU tensor: gloo, no GPU synchronisation
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return int(vote.item())


# ---------------------------------------------------------------- networks


def wrap(module: nn.Module, device: torch.device, processes: Processes) -> nn.Module:
    """The module wrapped in DistributedDataParallel when several processes train; else itself."""
    if not processes.is_distributed:
        return module
    # DDP broadcasts rank 0's weights now, and its buffers (BatchNorm running statistics, a few kB)
    # before each forward pass. Without --sync-bn each rank's pass then moves its own copy by its own
    # share; training-mode outputs never read them, and rank 0's are the ones saved and drawn with.
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch: PyTorch's SyncBatchNorm on GPUs, `CpuSyncBatchNorm` on the CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, CpuSyncBatchNorm):
            replacement = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            if child.affine:  # the very Parameter objects, so optimizers built before stay attached
                replacement.weight, replacement.bias = child.weight, child.bias
            setattr(module, name, replacement)
        else:
            convert_sync_batchnorm(child, device)
    return module


class _AllReduceSum(torch.autograd.Function):
    """y = the sum over the ranks of x. Each rank's loss depends on y, so x's gradient is the sum over the ranks of y's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch, for CPU processes (gloo).

    PyTorch's SyncBatchNorm accepts GPU tensors only. The statistics are sums all-reduced over the
    ranks by `_AllReduceSum`, whose backward all-reduces the gradients, so the gradient is that of
    the whole global batch, as SyncBatchNorm's. Same parameters and buffers as BatchNorm2d, so
    checkpoints load into the plain networks.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if not (self.training and _several()):
            return super().forward(x)
        channels = x.shape[1]
        local_count = x.new_tensor([x.numel() / channels])
        # one all_reduce for the per-channel sums and the element count of every rank
        totals = _AllReduceSum.apply(torch.cat([x.sum(dim=(0, 2, 3)), local_count]))
        sums, count = totals[:channels], totals[channels].detach()
        mean = sums / count  # (C,)
        centered = x - mean.view(1, -1, 1, 1)
        # the variance from centered values (two passes): E[x^2] - E[x]^2 loses digits in float32
        variance = _AllReduceSum.apply(centered.square().sum(dim=(0, 2, 3))) / count  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(mean * momentum)
                unbiased = variance * count / (count - 1)  # what BatchNorm keeps
                self.running_var.mul_(1 - momentum).add_(unbiased * momentum)
        out = centered * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out
