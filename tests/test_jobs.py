"""Job identity from each launcher's environment, in the documented order."""

from __future__ import annotations

import pytest

from mlcost.errors import ConfigError
from mlcost.jobs import JobIdentity, detect_job, local_rank


def test_no_launcher_is_a_single_node_step():
    assert detect_job({}) == JobIdentity()
    assert not detect_job({}).is_multi_node


def test_mlcost_variables_win_over_launchers():
    env = {"MLCOST_JOB_ID": "j1", "MLCOST_NODE_RANK": "1", "MLCOST_NODES": "2",
           "SLURM_JOB_ID": "77", "SLURM_NODEID": "0", "SLURM_NNODES": "4"}
    assert detect_job(env) == JobIdentity("j1", 1, 2, "mlcost")


def test_torchrun_nodes_are_world_over_local_world():
    env = {"TORCHELASTIC_RUN_ID": "abc", "GROUP_RANK": "1", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8",
           "LOCAL_RANK": "0"}
    ident = detect_job(env)
    assert (ident.job_id, ident.node_rank, ident.nodes, ident.source) == ("abc", 1, 2, "torchrun")
    assert ident.is_multi_node


def test_torchrun_without_rdzv_id_is_no_identity():
    assert detect_job({"TORCHELASTIC_RUN_ID": "none", "GROUP_RANK": "0"}).job_id is None


def test_slurm():
    assert detect_job({"SLURM_JOB_ID": "4242", "SLURM_NODEID": "3", "SLURM_NNODES": "4"}) == JobIdentity(
        "slurm-4242", 3, 4, "slurm"
    )


@pytest.mark.parametrize(
    ("master", "job"),
    [("bert-ft-master-0", "bert-ft"), ("bert-ft-node-0-0.bert-ft", "bert-ft"), ("mnist-worker-0", "mnist")],
)
def test_kubeflow_job_name_from_the_master_address(master, job):
    ident = detect_job({"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_MASTER_ADDR": master})
    assert (ident.job_id, ident.node_rank, ident.nodes, ident.source) == (job, 1, 2, "kubeflow")


def test_kubeflow_elastic_range_takes_the_upper_bound():
    assert detect_job({"PET_NNODES": "2:4", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "x-master-0"}).nodes == 4


def test_keywords_override_the_environment():
    ident = detect_job({"SLURM_JOB_ID": "1", "SLURM_NODEID": "0", "SLURM_NNODES": "2"}, node_rank=1)
    assert (ident.job_id, ident.node_rank, ident.nodes, ident.source) == ("slurm-1", 1, 2, "keywords")


def test_bad_variable_names_itself():
    with pytest.raises(ConfigError, match="MLCOST_NODES"):
        detect_job({"MLCOST_JOB_ID": "j", "MLCOST_NODES": "two"})
    with pytest.raises(ConfigError, match="MLCOST_NODE_RANK"):
        detect_job({"MLCOST_JOB_ID": "j", "MLCOST_NODE_RANK": "-1"})


def test_local_rank_from_torchrun_or_slurm():
    assert local_rank({}) == 0
    assert local_rank({"LOCAL_RANK": "3"}) == 3
    assert local_rank({"SLURM_LOCALID": "1"}) == 1
