"""Split an evaluation across DDP processes by index, and put the pieces back in index order.

Process r of w handles items r, r + w, r + 2w, ... of a dataset or of the generated sample sequence;
`gather_rows` reassembles every process's rows into the one (N, ...) tensor a single process would
have computed, on every process. Metrics then run on whole feature sets, so a value does not depend on
the number of processes (tested: 2 processes = 1 process on the same checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset


def shard_indices(n: int, rank: int, world_size: int) -> torch.Tensor:
    """The indices of `n` items this process handles: rank, rank + world_size, ..."""
    return torch.arange(rank, n, world_size)


def shard_loader(dataset: Dataset, rank: int, world_size: int, batch_size: int, num_workers: int = 0) -> DataLoader:
    """This process's share of `dataset`, in order. Its own generator: iterating a DataLoader draws a seed,
    and evaluating must not change the training run's RNG stream."""
    mine = Subset(dataset, shard_indices(len(dataset), rank, world_size).tolist())
    return DataLoader(mine, batch_size=batch_size, num_workers=num_workers, generator=torch.Generator())


def gather_rows(rows: torch.Tensor, n: int, rank: int, world_size: int,
                all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """All processes' rows (this one's: its `shard_indices(n, ...)` in order) as one (n, ...) tensor in
    index order, on every process. `all_gather` is the strategy's (tensor -> (world_size, ...) tensor)."""
    if world_size == 1:
        return rows
    per_rank = -(-n // world_size)  # all_gather needs equal shapes: pad to the largest share
    padded = rows.new_zeros((per_rank, *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = all_gather(padded)  # (world_size, per_rank, ...)
    out = rows.new_empty((n, *rows.shape[1:]))
    for r in range(world_size):
        count = len(range(r, n, world_size))
        out[r::world_size] = gathered[r, :count].to(out.device)
    return out
