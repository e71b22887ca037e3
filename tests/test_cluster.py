"""Blockwise jobs on a dask.distributed cluster, and the SLURM recipe's job script."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import napari_segnet as ns
from napari_segnet.cluster import local_cluster, slurm_cluster

from .test_ome_zarr import per_object_iou, write_ome_image

pytest.importorskip("distributed")
pytest.importorskip("ome_zarr")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_local_cluster_run_equals_in_memory_result(tmp_path):
    from distributed import Client

    model = ns.load_model("nuclei")
    img, _ = ns.data.synthetic_nuclei((224, 192), seed=5)
    p = write_ome_image(tmp_path / "img.ome.zarr", img, "yx", {"y": 1, "x": 1})
    ref = ns.segment(img, model, diameter=None)
    with local_cluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        res = ns.segment_ome_zarr(
            p, model, tmp_path / "out.zarr", block_size=96, label_halo=32, client=client
        )
    # Blocks ran in both worker processes, each with one copy of the model.
    assert len(res.info["models_per_worker"]) == 2
    assert set(res.info["models_per_worker"].values()) == {1}
    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    inst = np.asarray(out["labels/segnet_instances/0"])
    np.testing.assert_array_equal(out["labels/segnet_semantic/0"], ref.semantic)
    # Objects cut by block borders are whole: same objects, up to their numbering.
    assert res.n_objects == inst.max() == ref.instances.max() > 20
    assert per_object_iou(ref.instances, inst).min() >= 0.99
    assert res.n_blocks == 3 * 2


def test_slurm_job_script_without_a_scheduler():
    pytest.importorskip("dask_jobqueue")
    with slurm_cluster(
        cores=8,
        memory="32GB",
        gpus=1,
        queue="gpu",
        account="lab",
        job_script_prologue=["module load cuda"],
    ) as cluster:
        script = cluster.job_script()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A lab",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:1",
        "module load cuda",
    ):
        assert line in script
    # One worker per job, one block at a time on its GPU.
    assert "--nthreads 1" in script and "distributed.cli.dask_worker" in script
    with slurm_cluster(cores=4, memory="8GB") as cluster:
        script = cluster.job_script()
    assert "--gres" not in script and "--nthreads 4" in script
    with pytest.raises(ns.SegNetError, match="gpus must be"):
        slurm_cluster(gpus=2)
