"""Data-parallel training on several GPUs or machines: one process per device, launched by ``torchrun``.

    torchrun --nproc-per-node 4 -m cnnlab train --model alexnet --data imagenet ...

Each process holds the whole model and a 1/world_size slice of every *global* batch (the loader shards it);
DistributedDataParallel averages the gradients, so the run equals one process training on the global batch
(within float rounding; see docs/training.md). Rank 0 alone writes checkpoints, metrics, logs and summaries.
Metrics are summed over processes at the trainer's sync points (every ``log_every`` steps), never per step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
from torch import nn

from cnnlab.errors import ConfigError, DeviceError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (or any launcher that sets RANK, WORLD_SIZE and LOCAL_RANK)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) if the default process group is initialised, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class DistributedContext:
    rank: int  # this process among all of them, 0 .. world_size − 1
    world_size: int  # processes in the job (GPUs over all machines)
    local_rank: int  # this process on its machine: the GPU it uses
    backend: str  # nccl (CUDA) or gloo (CPU)
    device: str  # cuda:LOCAL_RANK or cpu

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistributedContext | None:
    """Join the process group that torchrun set up (env:// rendezvous); None when not launched by torchrun.

    Args:
        device: the ``--device`` asked for: ``auto`` (CUDA if present, else CPU), ``cuda`` or ``cpu``. Under
            torchrun every process takes the GPU ``cuda:LOCAL_RANK``, so ``cuda:N`` is refused.
        timeout_s: how long a collective waits for the slowest process before failing.

    Raises:
        ConfigError: a device that cannot be shared out this way.
        DeviceError: CUDA asked for but absent, or fewer GPUs than processes on this machine.
    """
    if not launched_by_torchrun():
        return None
    import torch.distributed as dist

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device not in ("auto", "cuda", "cpu"):
        raise ConfigError(
            f"--device {device} cannot be used under torchrun: each process takes the GPU cuda:LOCAL_RANK. "
            "Use --device cuda (or auto), or cpu; choose GPUs with CUDA_VISIBLE_DEVICES."
        )
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda was asked for but PyTorch sees no CUDA GPU here. Use --device cpu.")
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"Process {local_rank} on this machine has no GPU of its own: {torch.cuda.device_count()} are "
                f"visible. Start at most --nproc-per-node {torch.cuda.device_count()} processes per machine."
            )
        torch.cuda.set_device(local_rank)
        backend, device_name = "nccl", f"cuda:{local_rank}"
    else:
        backend, device_name = "gloo", "cpu"
    if not dist.is_initialized():
        extra = {"device_id": torch.device(device_name)} if use_cuda else {}
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **extra)
    return DistributedContext(rank, world_size, local_rank, backend, device_name)


def shutdown_distributed() -> None:
    """Leave the process group (a no-op when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistributedContext | None]:
    """``init_distributed`` on entry and a clean teardown on exit, also after errors (None outside torchrun)."""
    context = init_distributed(device)
    try:
        yield context
    except BaseException:
        if context is not None:
            shutdown_distributed()
        raise
    if context is not None:
        # Every process reaches the teardown together: rank 0 writes files (curves, summary) after the last step
        # while the others are done, and a process group torn down while a peer is still using its connections can
        # abort gloo ("terminate called without an active exception", seen in CI). After an error there is no
        # barrier: the failed process may never reach it.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        shutdown_distributed()


def broadcast_object(value: object, src: int = 0) -> object:
    """Rank ``src``'s ``value`` on every process (picklable objects; a no-op when not distributed)."""
    import torch.distributed as dist

    if rank_and_world_size()[1] == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(value: object) -> list:
    """Every process's ``value``, in rank order ([value] when not distributed)."""
    import torch.distributed as dist

    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return [value]
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (one collective); unchanged when not distributed."""
    import torch.distributed as dist

    if rank_and_world_size()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) copied to every process, in place.

    Parameters agree across processes after every DDP step; buffers do not (each process updates its BN
    statistics from its own shard in its forward), so this runs before a sharded evaluation.
    """
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def per_process_config(config, context: DistributedContext | None):
    """The config a process trains with: ``device`` cuda:LOCAL_RANK (or cpu), and one run directory for all
    processes (rank 0 names it when ``out`` is unset, so timestamps cannot differ). Unchanged outside torchrun.
    """
    if context is None:
        return config
    config = replace(config, device=context.device)
    if config.out is None:
        from cnnlab.train.rundir import default_run_dir

        name = str(default_run_dir(config.model, config.data)) if context.is_main else None
        config = replace(config, out=broadcast_object(name))
    return config


def wrap_data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over processes during backward)."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(module, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(module)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm layers replaced by SyncBatchNorm (statistics over the global batch), same parameters."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
