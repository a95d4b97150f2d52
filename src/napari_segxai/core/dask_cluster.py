"""dask.distributed clusters for the cohort runner and the TracIn index build: a local cluster, a scheduler, error lines."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


def one_line_error(exc: BaseException) -> str:
    """An exception as one line: its message for a user error, else its type and message (first line each)."""
    text = " ".join(str(exc).split()) or repr(exc)
    if isinstance(exc, ValueError):
        return text
    return f"{type(exc).__name__}: {text}"


def default_workers() -> int:
    """Workers of the default local cluster: one per CPU core, at most four."""
    return max(1, min(os.cpu_count() or 1, 4))


def local_cluster(workers: int, *, memory_limit: str | float | None = "auto"):
    """A dask LocalCluster of ``workers`` single-threaded worker processes on loopback (dashboard on a free port).

    Its workers keep glibc's own trim threshold. dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``,
    which hands every freed block over 64 KiB back to the kernel at once. torch's activations and
    gradients are megabytes each, so every pass mapped them afresh: the TracIn index build spent a
    third of its CPU time in the kernel and took twice as long (RESULTS.md, "the index build's lost
    half"). A threshold the user exported is kept.
    """
    import logging

    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=":0", memory_limit=memory_limit, silence_logs=logging.ERROR)


def connect(scheduler: str):
    """A client of the dask scheduler at ``scheduler`` (ValueError when it cannot be reached)."""
    from distributed import Client

    try:
        return Client(scheduler, timeout="15s")
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"Cannot reach a dask scheduler at {scheduler} ({one_line_error(exc)}); "
                         "start one (dask scheduler) or leave --scheduler out to run on this machine.") from None


@contextlib.contextmanager
def dask_client(client=None, scheduler: str | None = None, workers: int | None = None, *,
                memory_limit: str | float | None = "auto") -> Iterator:
    """``client`` when given, else a client of ``scheduler``, else of a new local cluster of ``workers``
    (default :func:`default_workers`); what this opened is closed on exit."""
    if client is not None:
        yield client
        return
    if scheduler:
        client = connect(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    from distributed import Client

    cluster = local_cluster(workers or default_workers(), memory_limit=memory_limit)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
