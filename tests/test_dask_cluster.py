"""The local dask cluster's workers: single-threaded, and freeing memory as glibc does, not as dask's default."""

import os

from napari_segxai.core.dask_cluster import dask_client


def _worker_environment():
    return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}


def test_local_workers_run_without_dasks_trim_threshold(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with dask_client(workers=1, memory_limit=None) as client:
        (environment,) = client.run(_worker_environment).values()
    assert environment == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}


def test_a_trim_threshold_the_user_exported_reaches_the_workers(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    with dask_client(workers=1, memory_limit=None) as client:
        (environment,) = client.run(_worker_environment).values()
    assert environment["MALLOC_TRIM_THRESHOLD_"] == "1048576"
