"""dask.distributed clusters for blockwise jobs: local processes, GPUs, SLURM.

Pass ``distributed.Client(cluster)`` as ``client`` to
:func:`napari_segnet.segment_ome_zarr`. Workers must see the image and the output
at the same paths (a shared file system on a cluster).
"""

from __future__ import annotations

from .errors import SegNetError


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs):
    """A ``LocalCluster`` of worker processes (each runs torch on its own threads).

    Parameters
    ----------
    n_workers : int
        Worker processes.
    threads_per_worker : int
        Threads each (torch uses as many); ``n_workers * threads_per_worker`` should
        not exceed the cores.
    **kwargs
        Passed to ``distributed.LocalCluster``.
    """
    from distributed import LocalCluster

    kwargs.setdefault("dashboard_address", None)
    return LocalCluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, **kwargs
    )


class PinGPU:
    """Worker plugin: worker ``i`` of a local GPU cluster uses GPU ``i`` (one per device)."""

    name = "napari-segnet-pin-gpu"

    def setup(self, worker) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(worker.name) % torch.cuda.device_count())


def gpu_client(n_gpus: int | None = None, **kwargs):
    """A client of a local cluster with one single-threaded worker per GPU.

    Each worker runs its blocks on its own GPU (``device="cuda"``), one at a time.
    """
    import torch
    from distributed import Client

    count = torch.cuda.device_count()
    n = count if n_gpus is None else n_gpus
    if n < 1 or n > count:
        raise SegNetError(f"n_gpus must be 1 to {count} (the GPUs present), not {n_gpus!r}")
    client = Client(local_cluster(n_workers=n, threads_per_worker=1, **kwargs))
    client.register_plugin(PinGPU())
    return client


def slurm_cluster(
    *,
    cores: int = 4,
    memory: str = "16GB",
    gpus: int = 0,
    walltime: str = "02:00:00",
    queue: str | None = None,
    account: str | None = None,
    python: str | None = None,
    **kwargs,
):
    """A dask-jobqueue ``SLURMCluster``: one worker per SLURM job.

    Start workers with ``cluster.scale(jobs=N)`` (or ``cluster.adapt``). With
    ``gpus=1`` each job asks for one GPU (``--gres=gpu:1``) and its worker runs one
    block at a time on it: one worker per device; scale to the number of GPUs.

    Parameters
    ----------
    cores : int
        CPU cores per job (worker threads without GPUs; reading and decoding with).
    memory : str
        Memory per job, e.g. ``"16GB"`` (a few blocks' worth is enough).
    gpus : int
        0 for CPU workers, 1 for a GPU worker per job.
    walltime, queue, account : str
        SLURM's ``--time``, ``--partition`` and ``--account``.
    python : str, optional
        The Python on the compute nodes (default: this one).
    **kwargs
        Passed to ``dask_jobqueue.SLURMCluster`` (e.g. ``job_script_prologue`` to
        load modules or activate an environment).
    """
    from dask_jobqueue import SLURMCluster

    if gpus not in (0, 1):
        raise SegNetError(f"gpus must be 0 or 1 per job (one worker per GPU), not {gpus!r}")
    extra = list(kwargs.pop("job_extra_directives", []))
    if gpus:
        extra.append("--gres=gpu:1")
        # One thread: the GPU takes one block at a time; the job's cores still decode.
        kwargs.setdefault("job_cpu", cores)
        cores = 1
    if account:
        kwargs["account"] = account
    if python:
        kwargs["python"] = python
    kwargs.setdefault("scheduler_options", {"dashboard_address": None})
    return SLURMCluster(
        cores=cores,
        processes=1,
        memory=memory,
        walltime=walltime,
        queue=queue,
        job_extra_directives=extra,
        **kwargs,
    )
