"""One run across processes (``torchrun``): the meta-batch's tasks are split across ranks, gradients averaged.

    torchrun --nproc-per-node 2 -m harness run --algo maml --data omniglot-20w1s --out runs/maml-2proc

Every rank draws the same meta-batch from the same seeded generator and
keeps its contiguous share of the tasks; after ``train_step`` the
gradients are summed with one ``all_reduce`` and divided by the number of
ranks. The meta-loss is a mean over tasks and each task's loss depends only
on that task (BatchNorm statistics are per task and per set), so the
averaged gradient is the one-process gradient of the whole meta-batch: MAML's
second-order gradient included, because nothing wraps the model (DDP's
bucketed hooks fire during the inner loop's ``torch.func.grad`` and are why
MAML under ``DistributedDataParallel`` fails in other libraries). Rank 0
writes the run directory and runs validation and the test; the other ranks
only train. Backend: NCCL on GPUs, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from harness.errors import HarnessError


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, episodes, meta_batch_size: int):
        """This rank's tasks of the meta-batch (``[tasks/world_size, ...]``)."""
        if meta_batch_size % self.world_size:
            raise HarnessError(
                f"meta-batch of {meta_batch_size} tasks does not split evenly across "
                f"{self.world_size} processes; choose --meta-batch-size divisible by --nproc-per-node"
            )
        if isinstance(episodes, tuple):  # classification batches (pretraining regimes): split the examples
            per_rank = episodes[0].shape[0] // self.world_size
            return tuple(t[self.rank * per_rank : (self.rank + 1) * per_rank] for t in episodes)
        per_rank = meta_batch_size // self.world_size
        return episodes.chunk(self.rank * per_rank, (self.rank + 1) * per_rank)

    def average_gradients(self, parameters) -> None:
        """Mean of every rank's gradient, in one collective over a flat buffer."""
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def average_metrics(self, metrics: dict) -> dict:
        keys = sorted(k for k, v in metrics.items() if isinstance(v, float))
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return {**metrics, **{k: float(v) / self.world_size for k, v in zip(keys, values)}}

    def close(self) -> None:
        """Leave the process group together; a rank exiting with it still open can abort in gloo's threads."""
        dist.barrier()
        dist.destroy_process_group()


def context_from_environment(device: torch.device) -> DistributedContext | None:
    """A process group when started by ``torchrun`` with more than one process, else ``None``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))
