"""Memory a forward pass needs and memory the machine has: so that work which cannot fit is refused with one
sentence before it starts, instead of the kernel's OOM killer ending the process without a word (exit 137).

`peak_tensor_bytes` runs a function once under a TorchDispatchMode that counts the bytes of every tensor storage
the function's ops create while it is alive: the peak of live activation bytes, a lower bound on what the same
ops need (the backend's scratch buffers and the allocator's slack come on top: experiments/translate_memory.md
compares the count with a real pass's peak RSS). Activations of a fully convolutional network grow with the
pixels, so counts on two small images (`scaled_peak_bytes`) give it at any size.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _LiveStorageBytes(TorchDispatchMode):
    """Counts the bytes of the storages that ops create, from creation until their last tensor is freed. A storage
    first seen as an op's input was made before the count began (an input, a weight): it and what ops write into it
    in place count nothing."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.storages: dict[int, list[int]] = {}  # data pointer -> [bytes counted, tensors alive]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.storages:
                self._track(t, counted=False)
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t, counted=True)
        return out

    def _track(self, t: torch.Tensor, counted: bool) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:  # empty
            return
        entry = self.storages.get(key)
        if entry is None:  # a new storage (an in-place op or a view returns one already known)
            entry = self.storages[key] = [storage.nbytes() if counted else 0, 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.storages[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.storages[key]


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """The peak bytes of tensors created by `fn()` and alive at once (inputs made before the call excluded)."""
    counter = _LiveStorageBytes()
    with counter:
        fn()
    return counter.peak


def scaled_peak_bytes(run: Callable[[int], object], side: int) -> Callable[[int, int], float]:
    """The peak tensor bytes of a fully convolutional pass as a function of its input's (width, height), from two
    passes `run(side)` and `run(2 * side)` on square inputs: a part that grows with the area (the activations)
    and one that grows with the sides (padding borders), B(s) = area * s**2 + border * s."""
    small, large = peak_tensor_bytes(lambda: run(side)), peak_tensor_bytes(lambda: run(2 * side))
    area = (large - 2 * small) / (2 * side**2)
    border = (small - area * side**2) / side
    return lambda w, h: area * w * h + border * (w + h) / 2


def _reclaimable(stat_file: Path, key: str) -> int:
    """The inactive file cache in a cgroup's memory.stat (the kernel reclaims it before it kills), 0 if absent."""
    try:
        for line in stat_file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_free_bytes(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Memory left under the tightest cgroup limit on this process (a container's, a SLURM job's, nested ones
    included: this process's cgroup and its ancestors, from `proc_cgroup`), not counting the inactive file cache
    the kernel would reclaim; None without a limit. cgroup v2 (memory.max) and v1 (memory.limit_in_bytes)."""
    paths = {"v2": ["/"], "v1": ["/"]}  # the hierarchy's root, when /proc/self/cgroup says nothing
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                paths["v2"].append(path)
            elif "memory" in controllers.split(","):
                paths["v1"].append(path)
    except (OSError, ValueError):
        pass
    layouts = {"v2": (root, "memory.max", "memory.current", "inactive_file"),
               "v1": (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}
    free = []
    for version, (base, limit_file, usage_file, inactive) in layouts.items():
        folders = set()
        for path in paths[version]:
            folder = (base / path.lstrip("/")).resolve() if path != "/" else base
            while True:  # the cgroup and its ancestors: a parent's limit binds its children
                folders.add(folder)
                if folder == base or base not in folder.parents:
                    break
                folder = folder.parent
        for folder in folders:
            try:
                limit = (folder / limit_file).read_text().strip()
                usage = int((folder / usage_file).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit.isdigit() and int(limit) < 2**60:  # "max" / a huge number: no limit
                used = max(0, usage - _reclaimable(folder / "memory.stat", inactive))
                free.append(max(0, int(limit) - used))
    return min(free) if free else None


def available_bytes(device: torch.device) -> int:
    """Bytes a new allocation on `device` can take: on a GPU, free device memory plus what PyTorch's caching
    allocator holds unused; on the CPU, the system's available memory (psutil), within the cgroup limit if any."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    available = psutil.virtual_memory().available
    cgroup = cgroup_free_bytes()
    return available if cgroup is None else min(available, cgroup)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"
