"""The SLURM pre-flight check: what sinfo says a node offers, what a job asks for, and the one line for a misfit."""

from __future__ import annotations

import pytest

from sharpgen.cluster import Node, check_jobs_fit, job_request, misfits, parse_sinfo
from sharpgen.errors import SharpgenError

SINFO = """cpu01|32|128000|(null)|cpu*
cpu02|64|256000|(null)|cpu*
gpu01|16|192000|gpu:a100:4(S:0-1)|gpu
"""


def test_sinfo_lines_become_nodes_with_their_gpus_and_the_default_partition():
    nodes = parse_sinfo(SINFO)
    assert [(n.name, n.partition, n.cpus, n.mem_mb, n.gpus, n.default_partition) for n in nodes] == [
        ("cpu01", "cpu", 32, 128000, 0, True),
        ("cpu02", "cpu", 64, 256000, 0, True),
        ("gpu01", "gpu", 16, 192000, 4, False),
    ]


def test_a_job_asks_for_cpus_per_task_else_its_threads_and_gpus_from_gpu_or_gres():
    assert job_request("a", 4, {"mem_mb": 1000}) == job_request("a", 1, {"cpus_per_task": 4, "mem_mb": 1000})
    assert job_request("a", 1, {"mem_mb_per_cpu": 500, "cpus_per_task": 4}).mem_mb == 2000
    assert job_request("a", 1, {"gpu": 2}).gpus == 2
    assert job_request("a", 1, {"gres": "gpu:a100:3"}).gpus == 3
    assert job_request("a", 1, {"slurm_partition": "gpu"}).partition == "gpu"


def test_jobs_that_fit_some_node_of_their_partition_pass():
    nodes = parse_sinfo(SINFO)
    requests = [
        job_request("normalize", 64, {"mem_mb": 200000}),
        job_request("train_gan", 8, {"mem_mb": 32000, "gpu": 1, "slurm_partition": "gpu"}),
    ]
    assert misfits(requests, nodes) == []


def test_a_job_larger_than_every_node_is_named_with_its_request_and_the_largest_node():
    nodes = parse_sinfo(SINFO)
    requests = [
        job_request("normalize", 128, {"mem_mb": 64000}),
        job_request("normalize", 128, {"mem_mb": 64000}),  # a rule with several jobs is named once
        job_request("train_gan", 8, {"mem_mb": 32000, "gpu": 1}),  # no GPU in the default partition
        job_request("sample", 8, {"mem_mb": 1000}),
    ]
    (line,) = misfits(requests, nodes)
    assert line.startswith("2 rule(s) ask for more than any node of the default partition offers")
    assert "largest node cpu02: 64 CPUs, 256000 MB" in line
    assert "normalize (128 CPUs, 64000 MB)" in line and "train_gan (8 CPUs, 32000 MB, 1 GPU)" in line
    assert "sample" not in line and "\n" not in line


def test_a_partition_without_nodes_is_said_so():
    (line,) = misfits([job_request("train_gan", 1, {"slurm_partition": "h100"})], parse_sinfo(SINFO))
    assert "partition 'h100'" in line and "it has no nodes" in line


def test_the_check_raises_one_user_error_for_misfits():
    nodes = [Node("vm", "main", 2, 24000, 1, default_partition=True)]
    check_jobs_fit([("sample", 2, {"mem_mb": 4000})], nodes)
    with pytest.raises(SharpgenError, match=r"normalize \(16 CPUs, 64000 MB\)"):
        check_jobs_fit([("normalize", 16, {"mem_mb": 64000})], nodes)


def test_output_that_is_not_sinfo_s_is_one_user_error():
    with pytest.raises(SharpgenError, match="cannot read this line of `sinfo"):
        parse_sinfo("PARTITION\nbatch*\n")
