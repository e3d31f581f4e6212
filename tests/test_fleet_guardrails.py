"""Guardrails for a fleet: a job across nodes billed and budgeted as one, budget windows per team,
and alerts (window thresholds, spikes) delivered to a real webhook on loopback.

The nodes are real processes with torchrun's environment, each with its own HOME and working
folder, sharing only the ledger (PostgreSQL, or one SQLite file) and MLflow's store. They start
their steps together through a file barrier, not by sleeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlcost import alerts, meter
from mlcost.errors import ConfigError, PreflightRefused
from mlcost.pricing.catalog import PriceCatalog

H100 = PriceCatalog.load().gpu_hour_usd("H100", "on_demand")

NODE = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from mlcost import meter, BudgetExceeded

    barrier = Path(os.environ["BARRIER"])
    (barrier / f"ready-{os.environ['GROUP_RANK']}-{os.environ['LOCAL_RANK']}").touch()
    while not (barrier / "go").exists():  # a barrier: every node starts its step together
        time.sleep(0.005)
    budget = float(os.environ["JOB_BUDGET"]) if os.environ.get("JOB_BUDGET") else None
    out = {}
    try:
        with meter("train", gpu_type="H100", interval=0.1, budget_usd=budget, tags={"team": "search"},
                   mlflow_timeout_s=120) as m:
            started = time.monotonic()  # the body's own time
            while time.monotonic() - started < float(os.environ["RUN_S"]):
                time.sleep(0.02)
    except BudgetExceeded as e:
        out["breach"] = {"limit_name": e.limit_name, "message": str(e)}
    out["body_s"] = time.monotonic() - started
    out["cost"] = m.cost.model_dump(mode="json") if m.cost else None
    print(json.dumps(out))
    """
)


def _run_nodes(tmp_path: Path, ledger: str, ranks: list[tuple[int, int]], *, run_s: float, budget: float | None,
               tracking_uri: str | None = None) -> list[dict]:  # fmt: skip
    """Start one process per (group rank, local rank) of a 2-node torchrun job with 4 GPUs a node."""
    script = tmp_path / "node.py"
    script.write_text(NODE)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    (tmp_path / "empty.toml").write_text("")
    from mlcost.ledger import Ledger

    Ledger(ledger).store.open()  # the shared ledger exists before the job, as in a deployment
    procs = []
    for group_rank, local in ranks:
        home = tmp_path / f"node{group_rank}-{local}"
        home.mkdir()
        env = {
            "PATH": os.environ["PATH"], "HOME": str(home), "MLCOST_LEDGER": ledger,
            "MLCOST_POLICY": str(tmp_path / "empty.toml"), "MLCOST_GPU_BACKEND": "simulated",
            "MLCOST_SIM_TRACE": "busy", "MLCOST_SIM_GPU": "H100", "MLCOST_SIM_DEVICES": "4",
            "TORCHELASTIC_RUN_ID": "ft-42", "GROUP_RANK": str(group_rank), "WORLD_SIZE": "8",
            "LOCAL_WORLD_SIZE": "4", "LOCAL_RANK": str(local), "BARRIER": str(barrier), "RUN_S": str(run_s),
            "JOB_BUDGET": "" if budget is None else repr(budget), "MLCOST_OUTBOX": str(home / "outbox.db"),
        }  # fmt: skip
        if tracking_uri:
            env["MLFLOW_TRACKING_URI"] = tracking_uri
        procs.append(subprocess.Popen([sys.executable, str(script)], cwd=home, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list(barrier.glob("ready-*"))) < len(ranks):
            assert time.monotonic() < deadline, "the nodes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.05)
        (barrier / "go").touch()
        outs = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr
            outs.append(json.loads(stdout.strip().splitlines()[-1]) | {"stderr": stderr})
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_node_torchrun_job_is_billed_per_node_and_summed(tmp_path, pg_url):
    import mlflow
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking).search_experiments()  # the store's schema, made once before the nodes race
    (node0, node1, follower) = _run_nodes(
        tmp_path, pg_url, [(0, 0), (1, 0), (0, 1)], run_s=2.0, budget=None, tracking_uri=tracking
    )
    assert follower["cost"] is None  # local rank 1 left the node to local rank 0
    for node, rank in ((node0, 0), (node1, 1)):
        cost = node["cost"]
        assert (cost["gpus"], cost["job_id"], cost["node_rank"], cost["nodes"]) == (4, "ft-42", rank, 2)
        assert cost["idle_fraction"] < 0.10  # no other node's GPUs counted idle here
    from mlcost.ledger import open_ledger

    rows = open_ledger(pg_url).rows("SELECT node_rank, total_usd FROM steps WHERE job_id = 'ft-42'")
    assert sorted(r["node_rank"] for r in rows) == [0, 1]  # the follower added no row
    job_total = node0["cost"]["total_usd"] + node1["cost"]["total_usd"]
    assert sum(r["total_usd"] for r in rows) == pytest.approx(job_total)

    client = MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`mlcost.job_id` = 'ft-42'")  # fmt: skip
    parents = [r for r in runs if r.data.tags.get("mlcost.kind") == "job"]
    children = [r for r in runs if r.data.tags.get("mlcost.kind") != "job"]
    assert len(parents) == 1 and len(children) == 2, [node["stderr"] for node in (node0, node1)]
    (parent,) = parents
    assert parent.data.metrics["cost_usd"] == pytest.approx(job_total, rel=1e-9)
    assert parent.data.metrics["gpu_hours"] == pytest.approx(
        node0["cost"]["gpu_hours"] + node1["cost"]["gpu_hours"], rel=1e-9
    )
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["mlcost.node_rank"] for c in children) == ["0", "1"]
    assert parent.info.status == "FINISHED"
    del mlflow


def test_a_job_whose_nodes_missed_mlflow_gets_its_parent_run_from_sync(tmp_path):
    """The tracking server was down while the job ran: both nodes' steps are only in the ledger.
    ``mlcost sync`` logs each node's run and then makes the job's parent run with their sum, as the
    live writes would have."""
    import socket

    from mlflow.tracking import MlflowClient

    with socket.socket() as s:  # a port nothing listens on: the nodes' MLflow writes are refused
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    ledger = str(tmp_path / "shared.db")
    nodes = _run_nodes(tmp_path, ledger, [(0, 0), (1, 0)], run_s=0.5, budget=None, tracking_uri=down)
    assert all(n["cost"]["mlflow_run_id"] is None for n in nodes)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cli = str(Path(sys.executable).with_name("mlcost"))
    synced = subprocess.run([cli, "sync", "--ledger", ledger, "--tracking-uri", tracking],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert synced.returncode == 0, synced.stderr
    client = MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`mlcost.job_id` = 'ft-42'")  # fmt: skip
    (parent,) = [r for r in runs if r.data.tags.get("mlcost.kind") == "job"]
    children = [r for r in runs if r.data.tags.get("mlcost.kind") != "job"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id} and len(children) == 2
    job_total = sum(n["cost"]["total_usd"] for n in nodes)
    assert parent.data.metrics["cost_usd"] == pytest.approx(job_total, rel=1e-9)
    assert parent.info.status == "FINISHED"


@pytest.mark.parametrize("backend", ["postgresql", "sqlite-shared-file"])
def test_a_job_budget_stops_every_node_on_the_jobs_total(tmp_path, backend, request):
    ledger = request.getfixturevalue("pg_url") if backend == "postgresql" else str(tmp_path / "shared.db")
    job_rate = 8 * H100 / 3600.0  # USD per second for the whole job: 2 nodes x 4 GPUs
    budget = job_rate * 1.0  # one second of the whole job's burn; one node alone would take 2 s
    nodes = _run_nodes(tmp_path, ledger, [(0, 0), (1, 0)], run_s=10.0, budget=budget)
    for node in nodes:
        assert node["breach"]["limit_name"] == "job_budget_usd"
        assert "job budget" in node["breach"]["message"] and "'ft-42'" in node["breach"]["message"]
        assert node["body_s"] < 1.6, node  # two sampling intervals past the job's crossing, not a node's
        assert node["cost"]["status"] == "breached"


# windows and alerts ----------------------------------------------------------------------------
@pytest.fixture
def warm_ledger():
    """The test's ledger made before its steps: creating a ledger's schema is part of the first
    step's start, which the step is billed for, and these tests compare step costs."""
    from mlcost.ledger import Ledger

    Ledger().local.open()


def _spend(step: str, usd: float, *, team: str, gpus: int = 8, **kw):
    """A real metered step on 8 simulated H100s that runs until it has spent ``usd`` (not for a
    number of seconds: its cost is the same however loaded the machine is)."""
    with meter(step, gpus=gpus, gpu_type="H100", interval=0.02, tags={"team": team}, **kw) as m:
        while m.cost_so_far() < usd:
            time.sleep(0.005)
    return m.cost


def _kinds(received):
    return [(r["mlcost"]["kind"], r["mlcost"].get("threshold_pct")) for r in received]


def test_a_team_window_warns_at_80pct_alerts_at_its_limit_and_then_refuses_only_that_team(
    tmp_path, webhook, monkeypatch, simulated_gpu, warm_ledger
):
    url, received, _ = webhook
    policy = tmp_path / "mlcost.toml"
    policy.write_text(textwrap.dedent(f"""
        [[budgets.windows]]
        team = "search"
        period = "month"
        usd = 0.10
        warn_at_pct = [80]
        [alerts]
        webhooks = ["{url}"]
    """))  # fmt: skip
    monkeypatch.setenv("MLCOST_POLICY", str(policy))
    simulated_gpu("busy", devices=8)
    costs = []
    with pytest.raises(PreflightRefused) as refused:
        for _ in range(10):
            costs.append(_spend("train", 0.03, team="search").total_usd)
    # the steps ran until the window was spent, and not one step longer
    assert sum(costs) >= 0.10 > sum(costs[:-1]) and len(costs) >= 3
    message = str(refused.value)
    assert "search-monthly" in message and "$0.10" in message and str(policy) in message
    other = _spend("embed", 0.01, team="ads")  # another team's step is not affected
    assert other.status == "succeeded"
    assert alerts.wait(10)
    kinds = _kinds(received)
    assert kinds.count(("window_warn", 80.0)) == 1
    assert kinds.count(("window_spent", None)) == 1
    assert kinds.count(("preflight", None)) == 1  # the refused step
    assert all("text" in r for r in received)

    cli = subprocess.run([sys.executable, "-m", "mlcost.cli", "budgets", "--format", "json"],
                         capture_output=True, text=True, env=os.environ.copy())  # fmt: skip
    assert cli.returncode == 1, cli.stderr
    (window,) = json.loads(cli.stdout)["windows"]
    assert window["state"] == "spent" and window["spent_usd"] >= 0.10 and window["limit_usd"] == 0.10
    table = subprocess.run([sys.executable, "-m", "mlcost.cli", "budgets"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert table.returncode == 1 and "search-monthly" in table.stdout and "spent" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80


def test_a_spike_alerts_once_and_ordinary_variation_never(tmp_path, webhook, monkeypatch, simulated_gpu, warm_ledger):
    url, received, _ = webhook
    policy = tmp_path / "mlcost.toml"
    policy.write_text(f'[alerts]\nwebhooks = ["{url}"]\n')
    monkeypatch.setenv("MLCOST_POLICY", str(policy))
    simulated_gpu("busy", devices=8)
    base = 0.004
    for factor in (0.9, 1.0, 1.1, 0.95, 1.05):  # ordinary variation: the history
        assert _spend("etl", base * factor, team="data").spike is None
    ordinary = _spend("etl", base * 1.1, team="data")
    spike = _spend("etl", base * 5, team="data")
    assert ordinary.spike is None
    assert spike.spike is not None and spike.spike.metric == "total_usd" and spike.spike.history == 6
    other_team = _spend("etl", base * 5, team="search")  # other tags: its own, too short, history
    assert other_team.spike is None
    assert alerts.wait(10)
    spikes = [r for r in received if r["mlcost"]["kind"] == "spike"]
    assert len(spikes) == 1 and spikes[0]["mlcost"]["step_id"] == spike.step_id
    from mlcost.ledger import open_ledger

    assert open_ledger().get(spike.step_id).spike.metric == "total_usd"  # recorded on the step


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[[budgets.windows]]\nperiod = "year"\nusd = 1', "budgets.windows.0.period"),
        ('[[budgets.windows]]\nperiod = "month"', "budgets.windows.0.usd"),
        ('[[budgets.windows]]\nperiod = "day"\nusd = 1\nwarn_at_pct = [-5]', "budgets.windows.0.warn_at_pct"),
        ('[alerts]\nwebhooks = ["hooks.example.com/x"]', "alerts.webhooks"),
    ],
)
def test_bad_windows_and_webhooks_name_the_field(tmp_path, toml, field):
    from mlcost.policy import Policy

    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Policy.load(path)
    cli = subprocess.run([sys.executable, "-m", "mlcost.cli", "budgets", "--policy", str(path)],
                         capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 2 and field in cli.stderr and "Traceback" not in cli.stderr


# the job as one in the gate and in FOCUS -------------------------------------------------------
def _node_row(step_id: str, rank: int, usd: float, **kw):
    from mlcost.step import StepCost

    return StepCost(step_id=step_id, name="train", status="succeeded", started_at="2026-11-02T10:00:00+00:00",
                    ended_at="2026-11-02T11:00:00+00:00", duration_s=3600.0, gpus=4, gpu_type="H100",
                    gpu_hours=4.0, compute_usd=usd, total_usd=usd, gpu_hour_usd=usd / 4, job_id="ft-7",
                    node_rank=rank, nodes=2, tags={"team": "search"}, **kw)  # fmt: skip


def test_the_gate_judges_a_jobs_total_not_each_node(tmp_path):
    from mlcost.ledger import Ledger

    ledger = tmp_path / "l.db"
    for rank in (0, 1):
        Ledger(ledger).write(_node_row(f"n{rank}", rank, 30.0))
    policy = tmp_path / "p.toml"
    policy.write_text("[budgets]\njob_usd = 50\n")  # each node's $30 is within it; the job's $60 is not
    gate = subprocess.run([sys.executable, "-m", "mlcost.cli", "gate", "--ledger", str(ledger), "--policy",
                           str(policy)], capture_output=True, text=True)  # fmt: skip
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "budgets.job_usd" in gate.stdout and "60.00" in gate.stdout

    out = tmp_path / "focus.csv"
    export = subprocess.run([sys.executable, "-m", "mlcost.cli", "export", "--focus", "--ledger", str(ledger),
                             "--output", str(out)], capture_output=True, text=True)  # fmt: skip
    assert export.returncode == 0, export.stderr
    import csv

    rows = list(csv.DictReader(out.open()))
    gpu_rows = [r for r in rows if r["ServiceName"] == "GPU Compute"]
    assert sorted((r["x_JobId"], r["x_NodeRank"]) for r in gpu_rows) == [("ft-7", "0"), ("ft-7", "1")]


def test_a_jobs_nodes_are_one_retrain_in_unit_economics(tmp_path):
    from mlcost.ledger import Ledger
    from mlcost.period import Period
    from mlcost.reports.analysis import unit_economics

    ledger = Ledger(tmp_path / "l.db")
    for rank in (0, 1):
        ledger.write(
            _node_row(f"n{rank}", rank, 30.0).model_copy(update={"tags": {"model": "m", "workload": "training"}})
        )
    (row,) = unit_economics(ledger, Period()).to_dict("records")
    assert (row["model"], row["retrains"], row["total_usd"]) == ("m", 1, 60.0)


def test_a_step_that_would_overspend_its_window_is_refused_before_it_starts(tmp_path, monkeypatch, simulated_gpu):
    policy = tmp_path / "mlcost.toml"
    policy.write_text('[[budgets.windows]]\nteam = "search"\nperiod = "day"\nusd = 1.0\n')
    monkeypatch.setenv("MLCOST_POLICY", str(policy))
    simulated_gpu("busy", devices=8)
    # 8 H100s for up to 1 h project about $98, over the $1 window that has spent nothing yet
    with (
        pytest.raises(PreflightRefused, match="would overspend") as refused,
        meter("train", gpus=8, gpu_type="H100", max_duration="1h", tags={"team": "search"}),
    ):
        pytest.fail("the body of a refused step must not run")
    assert refused.value.limit_name == "budget_window"
    assert refused.value.observed == pytest.approx(8 * H100)
