"""Batch work on a Dask cluster (``dask.distributed``): a local cluster of worker processes, an
existing scheduler by address, or one started by ``dask-jobqueue`` on SLURM/PBS/LSF (engine);
prediction and per-case scoring as tasks, with workers that hold their loaded models (predict);
the folds of a training stage in parallel, one per worker or GPU (train).
Without a scheduler everything runs serially in this process, as the rest of the package does.

May import: core, segment.
"""
