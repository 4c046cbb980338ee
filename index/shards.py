"""Sharding an index build across processes under `torchrun` (the engine the trainer uses).

Every rank computes the same plan (dates, digests, ticker table, build key) from the same inputs,
embeds the dates of its share (every world-th date of those left to do, so that each rank meets
early and late dates alike) into a staging directory of its own, `<build key>.rank<r>`, and meets
the others at a barrier. Rank 0 then moves their finished dates into its staging directory (a rename
each: the files are written once) and publishes one version, whose name every rank returns.

Each rank's staging directory resumes on its own: a rank killed mid-way loses only its uncommitted
dates, and a rerun of the same command (the same world size or another) embeds only the dates no
rank finished. On CPUs the ranks talk over gloo; on GPUs over NCCL, one device per rank (LOCAL_RANK).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # the process group was started here, and is ended by close()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, todo: list) -> list:
        """This rank's part of the work list."""
        return todo[self.rank :: self.world]

    def staging_key(self, key: str) -> str:
        """The rank's staging directory name: rank 0 writes into the build's own directory."""
        return key if self.main else f"{key}.rank{self.rank}"

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """End the process group if this shard started it (a process leaving with gloo's threads
        still running can abort)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def from_main(self, value):
        """`value` as rank 0 has it, on every rank (any picklable object)."""
        if self.world == 1:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def current_shard() -> Shard:
    """The shard of this process: rank and world size under torchrun (its process group initialised
    here when it is not yet), else a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Shard(dist.get_rank(), dist.get_world_size(), owns)


def shard_device(shard: Shard) -> torch.device | None:
    """The device of a rank under torchrun: its own GPU (LOCAL_RANK) where there are GPUs; None
    (the default device) otherwise."""
    if shard.world > 1 and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", shard.rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return None
