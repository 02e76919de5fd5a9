"""DistributedDataParallel when the command runs under `torchrun --nproc_per_node=N`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; with WORLD_SIZE > 1 each process joins a
process group (gloo on CPU, nccl where GPUs exist), wraps the model in DDP (gradients are
averaged over processes after every backward) and reads its own slice of each global batch
(batches.py). With equal slices, the average of the per-process mean losses is the mean loss
over the global batch, so N processes follow the trajectory of one process with the same
global batch, up to float rounding. Process 0 evaluates and writes every file.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from cellgen.errors import CellgenError
from cellgen.training.watchdog import watch_parent

DEFAULT_TIMEOUT = 300.0  # seconds a process waits for a silent peer (torch's default is 30 minutes)
_TIMEOUT = [DEFAULT_TIMEOUT]  # the process group's timeout, for peer_timeout's message


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = "none"

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def average(self, value: torch.Tensor) -> float:
        """The mean of a scalar over processes (every process gets it)."""
        if not self.active:
            return float(value.detach())
        total = value.detach().clone().reshape(1).to(self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total) / self.world

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def agree(self, ok: bool) -> bool:
        """True only if every process says ok (so that all stop together on one's error)."""
        if not self.active:
            return ok
        flag = torch.tensor([0 if ok else 1], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
        return int(flag) == 0

    def shutdown(self) -> None:
        """Leave the process group, after freeing what still holds it.

        The compiled cells are torch.fx GraphModules, which sit in reference cycles: when the run
        ends, their parameters, and DDP's reducer hooked on them (it holds the group's gloo
        threads), are freed only by the garbage collector. Left to interpreter exit, the threads
        were destroyed while still running: std::terminate, SIGABRT, and torchrun reported a
        finished run as failed (about 1 launch in 10 here). Collecting first frees them now.
        """
        if self.active and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()


def choose_device(device: str, local_rank: int = 0, world: int = 1) -> torch.device:
    """The device `--device` names for this process; under torchrun process r takes cuda:LOCAL_RANK."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
               else "torch finds no GPU")
        raise CellgenError(f"--device {device}: no CUDA device is available ({why})",
                           hint="train on the CPU: --device cpu (or leave --device out)")
    count = torch.cuda.device_count()
    if ":" in device:
        index = int(device.partition(":")[2])
        if world > 1:
            raise CellgenError(f"--device {device} names one GPU, but torchrun started {world} processes, which "
                               "take one GPU each (cuda:LOCAL_RANK)",
                               hint="pass --device cuda, and choose the GPUs with CUDA_VISIBLE_DEVICES")
        if index >= count:
            raise CellgenError(f"--device {device}: this machine has {count} CUDA device(s), "
                               f"cuda:0 … cuda:{count - 1}")
        return torch.device("cuda", index)
    return torch.device("cuda", local_rank % count)


def setup_distributed(device: str = "auto", timeout: float | None = None) -> Distributed:
    """Join the process group torchrun describes, or run alone; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = choose_device(device, local_rank, world)
    use_cuda = torch_device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(torch_device)
    watch_parent()  # a torchrun worker whose agent dies stops: cellgen/training/watchdog.py
    if world <= 1:
        return Distributed(device=torch_device)
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda and not dist.is_nccl_available():
        raise CellgenError("torchrun on GPUs needs NCCL, which this torch is built without")
    seconds = DEFAULT_TIMEOUT if timeout is None else timeout
    if seconds <= 0:
        raise CellgenError(f"--dist-timeout must be positive, not {seconds:g}")
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=seconds))
    _TIMEOUT[0] = seconds
    return Distributed(rank, world, local_rank, torch_device, backend)


def peer_timeout(error: BaseException) -> CellgenError | None:
    """The error to show for a collective that timed out waiting for a frozen or lost peer."""
    text = str(error)
    if not any(word in text for word in ("Timed out", "timed out", "Timeout", "timeout", "Connection reset",
                                         "Connection closed")):
        return None
    return CellgenError(f"a peer process did not answer within {_TIMEOUT[0]:g} s (frozen, killed, or its "
                        f"machine is unreachable); this process stops",
                        hint="set the wait with --dist-timeout SECONDS; resume the run with --resume")
