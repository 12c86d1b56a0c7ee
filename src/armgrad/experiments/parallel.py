"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` and DistributedDataParallel.

Under ``torchrun --nproc_per_node W -m armgrad vae ...`` every process draws the same batch of
``batch_size`` examples (one data generator, seeded alike), takes its shard of ``batch_size / W``
rows and estimates the gradient with its own noise generator, seeded from the run's seed and its
rank; DDP averages the gradients. The backend is gloo on CPU and NCCL on CUDA, each process on
the GPU of its local rank. Rank 0 evaluates, logs and writes the checkpoint (with every shard's
noise state, gathered); every process resumes from it.

The step is defined by its shards, not by the number of processes: a single process run with
``--shards W`` goes through the same shards one after the other, with the same generators, and
reproduces the W-process run exactly (up to the order of floating-point sums). With one shard it
is the plain single-process step.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
import torch.distributed as dist

# the noise generator of shard s is seeded with seed + 1 + s * NOISE_SEED_STRIDE (shard 0: seed + 1)
NOISE_SEED_STRIDE = 1_000_003


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> None:
    """Join the process group the launcher describes (no-op for a single process).

    gloo on CPU, NCCL on CUDA; with CUDA each process uses the GPU of its ``LOCAL_RANK``, so that
    ``"cuda"`` names it everywhere after this call.
    """
    if not launched() or dist.is_initialized():
        return
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def rank_at_launch() -> int:
    """The rank the launcher gave this process (0 alone), readable before and after the group."""
    return int(os.environ.get("RANK", "0"))


def noise_seed(seed: int, shard: int) -> int:
    return seed + 1 + shard * NOISE_SEED_STRIDE


def check_shards(shards: int, batch_size: int) -> int:
    """The number of shards a run uses: ``shards``, or the number of processes when launched.

    Under a launcher, ``--shards`` must be 1 (then it becomes W) or W itself, and the batch must
    split evenly over the shards.
    """
    world = world_size()
    if not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    if world > 1:
        if shards not in (1, world):
            raise ValueError(
                f"--shards {shards} with {world} processes: each process takes one shard, "
                f"so leave --shards at 1 or set it to {world}"
            )
        shards = world
    if batch_size % shards:
        raise ValueError(
            f"batch size {batch_size} does not split evenly into {shards} shards "
            f"(one per process); use a multiple of {shards}"
        )
    return shards


def my_shards(shards: int) -> range:
    """The shards this process computes: all of them alone, its own under a launcher."""
    return range(rank(), shards, world_size())


class Objective(torch.nn.Module):
    """The training loss as a module, so that DDP sees a forward pass: ``forward(x, gen) = loss(x, gen)``."""

    def __init__(self, model: torch.nn.Module, loss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x, generator):
        return self.loss(x, generator)


def wrap(model: torch.nn.Module, loss):
    """``loss`` as a callable whose backward averages gradients over processes (DDP), or as is alone."""
    if world_size() == 1:
        return loss
    ddp = torch.nn.parallel.DistributedDataParallel
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    # the model's buffers (the data mean) are constants: no broadcast before every forward
    # (the flag's name changed in torch 2.13; the older one still works, with a warning)
    constant = (
        "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
    )
    flags: dict[str, Any] = {constant: False}
    return ddp(Objective(model, loss), device_ids=device_ids, gradient_as_bucket_view=True, **flags)


def average_grads(params: list) -> None:
    """Average ``.grad`` of parameters outside DDP (the estimators' controls) over processes."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over processes (the values themselves alone)."""
    if world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world_size()


def gather(obj):
    """A list of every process's ``obj``, in rank order (``[obj]`` alone)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def collect(generators: list, mine) -> None:
    """Give the first process the state of every shard's generator (each process drew from its own
    shards' only), before it writes the checkpoint."""
    if world_size() == 1:
        return
    for states in gather({s: generators[s].get_state() for s in mine}):
        if is_main():
            for s, state in states.items():
                generators[s].set_state(state)


def broadcast(obj):
    """Rank 0's ``obj`` on every process."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def close(finished: bool = True) -> None:
    """Leave the process group. After a finished run every process first waits for the others
    (a barrier), so that no process shuts its connections down while a peer still works with them
    (gloo then aborts the peer at exit); after a failure it leaves at once."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()
