"""Which engine runs batch work: serial in this process (no scheduler), a ``LocalCluster`` of
worker processes (``"local"``), or an existing Dask scheduler (``tcp://HOST:8786``, or a
``scheduler.json`` file as ``dask-jobqueue``/``dask-mpi`` write them).

Workers run one task at a time (one thread: each task is a whole scan on a whole device); CUDA
work asks for one ``GPU`` resource per task, which the local cluster gives each of its workers and
a remote worker declares with ``dask worker ... --resources GPU=1``.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from napari_uda.core.errors import UdaError
from napari_uda.core.jobs import Progress, StopFlag, check_stop, emit

T = TypeVar("T")

GPU = "GPU"  # the worker resource a CUDA task asks for


def task_resources(device: str, client: Any = None) -> dict[str, int] | None:
    """What one task on ``device`` needs from a worker: a GPU for CUDA, nothing else for the CPU.
    Given the ``client``, an error now if its cluster has no worker with that GPU resource (CUDA
    tasks would wait for one for ever)."""
    if not device.startswith("cuda"):
        return None
    if client is not None:
        require_gpu_workers(client)
    return {GPU: 1}


def check_scheduler(scheduler: str | None, workers: int | None) -> None:
    """A clear error for a scheduler that is none of the three forms, or a worker count without one."""
    if scheduler is None:
        if workers is not None:
            raise UdaError("--workers needs --scheduler local (without a scheduler the work runs serially)")
        return
    if scheduler == "local" or "://" in scheduler or scheduler.endswith(".json"):
        if workers is not None and scheduler != "local":
            raise UdaError("--workers sizes a local cluster; an existing scheduler has its own workers")
        return
    raise UdaError(f"--scheduler {scheduler!r}: use 'local', an address such as tcp://HOST:8786, "
                   "or a scheduler file (scheduler.json)")


@contextmanager
def dask_client(scheduler: str | None, workers: int | None = None, device: str = "cpu") -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler`` (None: yields None, the work runs serially). A local
    cluster has ``workers`` processes (default: one per GPU on CUDA, else 2) and is shut down on exit."""
    check_scheduler(scheduler, workers)
    if scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler != "local":
        path = Path(scheduler)
        kwargs = {"scheduler_file": str(path)} if scheduler.endswith(".json") else {"address": scheduler}
        if "scheduler_file" in kwargs and not path.is_file():
            raise UdaError(f"{path}: no such scheduler file")
        try:
            client = Client(timeout="10s", **kwargs)
        except OSError as exc:  # distributed raises OSError (a TimeoutError among them) when it cannot connect
            raise UdaError(f"cannot reach the Dask scheduler {scheduler} ({exc})") from None
        with client:
            yield client
        return
    cuda = device.startswith("cuda")
    n = workers or (_gpu_count() if cuda else 2)
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                      resources={GPU: 1} if cuda else None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


def _gpu_count() -> int:
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return max(1, len(visible.split(",")) if visible else torch.cuda.device_count())


def require_gpu_workers(client: Any) -> None:
    """CUDA tasks wait for a worker with a ``GPU`` resource: an error now if the cluster has none."""
    workers = client.scheduler_info()["workers"].values()
    if not any(w.get("resources", {}).get(GPU) for w in workers):
        raise UdaError("the Dask cluster has no worker with a GPU resource; start GPU workers with "
                       "`dask worker SCHEDULER --nthreads 1 --resources GPU=1` (one per GPU)")


def run_tasks(client: Any, fn: Callable[..., T], calls: Sequence[tuple], names: Sequence[str], task: str,
              progress: Progress | None = None, should_stop: StopFlag | None = None,
              resources: dict[str, int] | None = None) -> list[T]:
    """``fn(*call)`` for every call, serially here (``client`` None) or as tasks on the cluster; the
    results in the order of ``calls``. ``names`` name the calls in progress events (task ``task``)."""
    if client is None:
        results = []
        for i, (call, name) in enumerate(zip(calls, names)):
            check_stop(should_stop, task)
            results.append(fn(*call))
            emit(progress, task, name, i + 1, len(calls), "tasks")
        return results
    token = uuid.uuid4().hex[:12]
    futures = [client.submit(fn, *call, key=f"napari-uda-{task.replace(' ', '-')}-{token}-{i}", pure=False,
                             resources=resources) for i, call in enumerate(calls)]
    follow(client, task, dict(zip(names, futures)), progress, should_stop)
    return [f.result() for f in futures]


def follow(client: Any, task: str, futures: dict[str, Any], progress: Progress | None,
           should_stop: StopFlag | None, on_poll: Callable[[], None] | None = None) -> None:
    """Wait for ``futures`` (name -> future), reporting each finished one as an event of ``task``
    (``on_poll`` runs while waiting); the first failure is raised (its message names the file); a
    stop, or any error, cancels every task still queued or running."""
    from distributed import as_completed

    names = {fut.key: name for name, fut in futures.items()}
    done, pending = 0, as_completed(list(futures.values()))
    try:
        while not pending.is_empty():
            check_stop(should_stop, task, "the cluster's tasks were cancelled")
            if on_poll is not None:
                on_poll()
            if not pending.has_ready():
                time.sleep(0.2)
                continue
            for fut in pending.next_batch(block=False):
                fut.result()  # a task's error, raised here
                done += 1
                emit(progress, task, names[fut.key], done, len(futures), "tasks")
    except BaseException:
        client.cancel(list(futures.values()))
        raise
