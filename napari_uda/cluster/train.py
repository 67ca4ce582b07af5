"""The folds of a training stage in parallel on a Dask cluster, one fold per worker (per GPU).

Each fold is nnU-Net's own training in a child process of its worker (the same
:class:`~napari_uda.segment.segmenter.FoldJob` the serial path runs), with the worker's own
environment and GPU. The client follows the folds' event lines (a shared file system) and asks
them to stop through a Dask ``Event``: cancelling a task cannot reach a child process, a stop
event can, and a stopped fold resumes from its checkpoint on the next run.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_uda.cluster.engine import follow, task_resources
from napari_uda.core.child import LineFollower
from napari_uda.core.device import TORCH_THREADS
from napari_uda.core.jobs import Progress, StopFlag
from napari_uda.segment.segmenter import FoldJob, fold_jobs, train_folds


def fold_task(job: FoldJob, stop_event: str) -> int:
    """On a worker: train one fold until it is done or the client sets ``stop_event``, torch limited
    to the worker's threads (nnU-Net takes every core on a CPU: two folds on two cores ran ten times
    slower). On CUDA the workers of a local cluster take one GPU each; a remote worker keeps its
    ``CUDA_VISIBLE_DEVICES``."""
    from distributed import Event, get_worker

    worker = get_worker()
    name = worker.name
    job = replace(job, env={**job.env, TORCH_THREADS: str(max(1, worker.state.nthreads))})
    if "cuda" in job.args and isinstance(name, int) and "CUDA_VISIBLE_DEVICES" not in os.environ:
        import torch

        job = replace(job, env={**job.env, "CUDA_VISIBLE_DEVICES": str(name % max(1, torch.cuda.device_count()))})
    job.run(Event(stop_event).is_set)
    return job.fold


def train_folds_on(client: Any, root: str | Path, dataset_id: int, folds: Sequence[int], budget: str = "tiny",
                   planner: str = "resenc-m", configuration: str = "3d_fullres", device: str = "cpu",
                   progress: Progress | None = None, should_stop: StopFlag | None = None,
                   init_from: Path | None = None) -> Path:
    """:func:`~napari_uda.segment.segmenter.train_folds` with one task per fold on ``client``'s cluster
    (None: one fold after another here). Returns the model folder."""
    if client is None:
        return train_folds(root, dataset_id, folds, budget, planner, configuration, device, progress, should_stop,
                           init_from)
    from distributed import Event

    model, jobs = fold_jobs(root, dataset_id, folds, budget, planner, configuration, device, progress, init_from)
    if not jobs:
        return model
    resources = task_resources(device, client)
    token = uuid.uuid4().hex[:12]
    stop = Event(f"napari-uda-stop-{token}", client=client)
    jobs = [FoldJob(j.fold, j.args, {k: v for k, v in j.env.items() if k != "CUDA_VISIBLE_DEVICES"}, j.log)
            for j in jobs]  # a worker trains on its own GPU
    events = LineFollower(jobs[0].env["NAPARI_UDA_PROGRESS"])  # from now on: before any fold writes
    futures = {f"fold {j.fold}": client.submit(fold_task, j, stop.name, resources=resources, pure=False,
                                               key=f"napari-uda-train-{token}-fold{j.fold}") for j in jobs}

    def forward() -> None:
        for event in events.events():
            if progress is not None:
                progress(event)

    try:
        follow(client, "train", futures, progress, should_stop, on_poll=forward)
    except BaseException:
        stop.set()
        raise
    forward()
    return model
