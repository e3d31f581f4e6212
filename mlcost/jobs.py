"""Who this process is within a multi-node job: the job's id, this node's rank, how many nodes.

A training job that spans N nodes starts one meter per node (launchers start the same script on
every node, and torchrun once per GPU), so the ledger holds one row per node and the job is their
sum. The identity is read from the first launcher whose variables are set, in this order:

1. mlcost's own ``MLCOST_JOB_ID`` / ``MLCOST_NODE_RANK`` / ``MLCOST_NODES``;
2. torchrun (``TORCHELASTIC_RUN_ID``, ``GROUP_RANK``, ``WORLD_SIZE`` / ``LOCAL_WORLD_SIZE``);
3. SLURM (``SLURM_JOB_ID``, ``SLURM_NODEID``, ``SLURM_NNODES``);
4. Kubeflow's PyTorchJob / Trainer (``PET_NNODES``, ``PET_NODE_RANK``; the job's name from
   ``PET_MASTER_ADDR``, whose host part is ``<job>-master-0`` or ``<job>-node-0-0``).

Explicit keywords (``meter(..., job_id=, node_rank=, nodes=)``) win over all of them.

Only the process with local rank 0 on a node meters it: torchrun, ``srun --ntasks-per-node`` and
the Kubeflow launchers start one process per GPU, and eight meters on one node would bill its GPUs
eight times.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from mlcost.errors import ConfigError

_LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
# torchrun's run id defaults to "none" when --rdzv-id is not given: not an identity worth keeping
_NO_ID = {"", "none", "default"}
_KUBEFLOW_MASTER = re.compile(r"^(?P<job>.+?)-(?:master-\d+|node-\d+-\d+|worker-\d+|launcher(?:-\d+)?)$")


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """A node's place in a job. ``job_id`` is None for a step that is not part of a multi-node job."""

    job_id: str | None = None
    node_rank: int = 0
    nodes: int = 1
    source: str = "none"  # which launcher's variables were read: mlcost, torchrun, slurm, kubeflow, keywords

    @property
    def is_multi_node(self) -> bool:
        return self.job_id is not None and self.nodes > 1


def _int(env: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError as e:
        raise ConfigError(f"expected an integer, got {raw!r}", source=f"environment variable {name}") from e
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value}", source=f"environment variable {name}")
    return value


def _from_mlcost(env: Mapping[str, str]) -> JobIdentity | None:
    job_id = env.get("MLCOST_JOB_ID", "").strip()
    if not job_id:
        return None
    return JobIdentity(
        job_id=job_id,
        node_rank=_int(env, "MLCOST_NODE_RANK", minimum=0) or 0,
        nodes=_int(env, "MLCOST_NODES", minimum=1) or 1,
        source="mlcost",
    )


def _from_torchrun(env: Mapping[str, str]) -> JobIdentity | None:
    run_id = env.get("TORCHELASTIC_RUN_ID", "").strip()
    if run_id.lower() in _NO_ID or "GROUP_RANK" not in env:
        return None
    world, local_world = _int(env, "WORLD_SIZE", minimum=1), _int(env, "LOCAL_WORLD_SIZE", minimum=1)
    nodes = max(1, world // local_world) if world and local_world else 1
    return JobIdentity(run_id, _int(env, "GROUP_RANK", minimum=0) or 0, nodes, "torchrun")


def _from_slurm(env: Mapping[str, str]) -> JobIdentity | None:
    job_id = env.get("SLURM_JOB_ID", "").strip()
    if not job_id:
        return None
    return JobIdentity(
        f"slurm-{job_id}",
        _int(env, "SLURM_NODEID", minimum=0) or 0,
        _int(env, "SLURM_NNODES", minimum=1) or 1,
        "slurm",
    )


def _from_kubeflow(env: Mapping[str, str]) -> JobIdentity | None:
    if "PET_NNODES" not in env:
        return None
    host = env.get("PET_MASTER_ADDR", "").split(".")[0]
    match = _KUBEFLOW_MASTER.match(host)
    job_name = match.group("job") if match else host
    if not job_name:
        return None  # a job without a name cannot be summed across its pods: meter each on its own
    # PET_NNODES may be a range ("2:4") for elastic jobs; the upper bound is what may be allocated
    raw_nodes = env["PET_NNODES"].split(":")[-1]
    nodes = _int({"PET_NNODES": raw_nodes}, "PET_NNODES", minimum=1) or 1
    return JobIdentity(job_name, _int(env, "PET_NODE_RANK", minimum=0) or 0, nodes, "kubeflow")


_SOURCES = (_from_mlcost, _from_torchrun, _from_slurm, _from_kubeflow)


def detect_job(
    env: Mapping[str, str] | None = None,
    *,
    job_id: str | None = None,
    node_rank: int | None = None,
    nodes: int | None = None,
) -> JobIdentity:
    """This process's job identity: the keywords, over the first launcher whose variables are set."""
    env = os.environ if env is None else env
    found = next((ident for read in _SOURCES if (ident := read(env)) is not None), JobIdentity())
    if job_id is None and node_rank is None and nodes is None:
        return found
    return JobIdentity(
        job_id=job_id if job_id is not None else found.job_id,
        node_rank=node_rank if node_rank is not None else found.node_rank,
        nodes=nodes if nodes is not None else found.nodes,
        source="keywords",
    )


def local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank on its node (0 when no launcher says otherwise)."""
    env = os.environ if env is None else env
    for name in _LOCAL_RANK_VARS:
        value = _int(env, name, minimum=0)
        if value is not None:
            return value
    return 0
