"""This machine as the embedder sees it: usable CPUs and how to split them into threads, the
CPU's name, package versions, and the small JSON files in which it remembers what it measured.

The one place that counts CPUs and sets thread counts: the embedder, the bulk-path measurement
and the benchmarks all ask here, so a process limited to fewer cores than the host (taskset, a
container, a Ray actor) is counted the same everywhere.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), not all the host has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def cpu_free(loadavg: Path = Path("/proc/loadavg")) -> bool:
    """Whether a CPU is idle at this moment: fewer tasks running or runnable on the host
    than this process may use, itself included (Linux; False where it cannot tell)."""
    try:
        with open(loadavg, "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return False
    return running < usable_cpus()


def batch_workers(cpus: int | None = None) -> tuple[int, int]:
    """(parallel batches, threads per batch) for cpus CPUs (default: the usable ones)."""
    cpus = max(1, cpus or usable_cpus())
    workers = min(cpus, 8)
    return workers, max(1, cpus // workers)


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def read_json(file: Path) -> dict[str, Any]:
    """A JSON object from file; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(file: Path, data: dict[str, Any]) -> None:
    """Write whole or not at all: readers never see half a file."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, file)


@contextmanager
def thread_count(get: Callable[[], int], put: Callable[[int], None], n: int) -> Iterator[None]:
    """A library's thread count (torch's, FAISS's OpenMP) set to n inside the block, then
    restored: the one helper for every such setting."""
    old = get()
    put(n)
    try:
        yield
    finally:
        put(old)


def torch_threads(n: int) -> AbstractContextManager[None]:
    """torch's intra-op threads for the threads started inside the block."""
    import torch

    return thread_count(torch.get_num_threads, torch.set_num_threads, n)
