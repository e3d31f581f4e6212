"""Report figures over known ledgers, each expected answer worked out by hand in the test."""

from __future__ import annotations

import pytest

from mlcost.pricing.catalog import PriceCatalog
from mlcost.reports import analysis as a

ALL = a.Period()


def _chargeback_ledger(ledger, mk):
    s = mk.step
    return mk.write(
        ledger,
        s("train", 10.0, idle_fraction=0.2, gpus=2, hours=0.5),  # search/ranker: idle $2, idle 0.2 GPU-h
        s("train", 6.0),  # search/ranker
        s("serve", 4.0, workload="inference", idle_fraction=0.25),  # search/ranker: idle $1, 0.25 GPU-h
        s("ctr", 5.0, team="ads", project="growth", model="ctr", idle_fraction=0.5, hours=2),  # idle $2.5, 1 GPU-h
        s("adhoc", 1.0, team=None, project=None, model=None, workload=None),
        s("train", 100.0, status="running"),  # not sealed: never charged
        s("train", 50.0, started="2025-05-01T10:00:00+00:00"),  # before the period below
    )


def test_chargeback_by_team_sums_sealed_steps_in_the_period(ledger, mk):
    _chargeback_ledger(ledger, mk)
    df = a.chargeback(ledger, a.Period(since="2025-06-01"), by=("team",)).set_index("team")
    assert df.loc["search", "total_usd"] == pytest.approx(20.0)  # 10 + 6 + 4
    assert df.loc["search", "steps"] == 3
    assert df.loc["search", "idle_usd"] == pytest.approx(3.0)  # 2 + 1
    assert df.loc["ads", "total_usd"] == pytest.approx(5.0)
    assert df.loc["(untagged)", "total_usd"] == pytest.approx(1.0)
    assert df["share"].sum() == pytest.approx(1.0)
    assert df.loc["search", "share"] == pytest.approx(20 / 26)
    assert list(df.index) == ["search", "ads", "(untagged)"]  # most expensive first


def test_chargeback_by_several_dimensions(ledger, mk):
    _chargeback_ledger(ledger, mk)
    df = a.chargeback(ledger, a.Period(since="2025-06-01"), by=("model", "workload"))
    got = {(r.model, r.workload): r.total_usd for r in df.itertuples()}
    assert got == {
        ("ranker", "training"): pytest.approx(16.0),
        ("ranker", "inference"): pytest.approx(4.0),
        ("ctr", "training"): pytest.approx(5.0),
        ("(untagged)", "(untagged)"): pytest.approx(1.0),
    }
    assert a.chargeback(ledger, ALL, by=("team",)).set_index("team").loc["search", "total_usd"] == pytest.approx(70.0)


def test_idle_waste_in_gpu_hours_and_dollars(ledger, mk):
    _chargeback_ledger(ledger, mk)
    by_team = a.idle_waste(ledger, a.Period(since="2025-06-01"), by="team").set_index("team")
    # search: 2 GPUs x 0.5 h x 0.2 = 0.2 GPU-h; 1 x 1 h x 0.25 = 0.25 GPU-h  -> 0.45 GPU-h, $3
    assert by_team.loc["search", "idle_gpu_hours"] == pytest.approx(0.45)
    assert by_team.loc["search", "idle_usd"] == pytest.approx(3.0)
    assert by_team.loc["ads", "idle_gpu_hours"] == pytest.approx(1.0)  # 1 GPU x 2 h x 0.5
    assert by_team.loc["ads", "idle_share"] == pytest.approx(0.5)
    by_step = a.idle_waste(ledger, a.Period(since="2025-06-01"), by="name").set_index("name")
    assert by_step.loc["ctr", "idle_usd"] == pytest.approx(2.5)
    assert by_step.loc["train", "idle_usd"] == pytest.approx(2.0)


def test_unit_economics_per_retrain_per_1k_inferences_and_per_outcome(ledger, mk):
    s = mk.step
    mk.write(
        ledger,
        s("prep", 2.0, run_key="r1"), s("fit", 8.0, run_key="r1"),  # retrain 1: $10
        s("prep", 2.0, run_key="r2"), s("fit", 12.0, run_key="r2"),  # retrain 2: $14
        s("serve", 3.0, workload="inference", extra_tags={"inferences": "200000"}),
        s("serve", 1.0, workload="inference", extra_tags={"inferences": "50000"}),
    )  # fmt: skip
    df = a.unit_economics(ledger, ALL, outcomes={"orders": 1000}).set_index("model")
    assert df.loc["ranker", "retrains"] == 2
    assert df.loc["ranker", "usd_per_retrain"] == pytest.approx(12.0)  # (10 + 14) / 2
    assert df.loc["ranker", "usd_per_1k_inferences"] == pytest.approx(4.0 / 250)  # $4 / 250k x 1k = $0.016
    assert df.attrs["outcomes"]["orders"]["usd_per_unit"] == pytest.approx(28.0 / 1000)


def test_spot_whatif_for_interruptible_on_demand_work(ledger, mk):
    s = mk.step
    mk.write(
        ledger,
        s("fit", 12.29, spot=3.19),  # training on demand: saving 9.10
        s("eval", 1.0, workload="evaluation", spot=0.4),  # saving 0.6
        s("serve", 5.0, workload="inference", spot=1.0),  # serving is not interruptible: left out
        s("fit", 3.19, pricing="spot", spot=3.19),  # already spot: left out
    )
    df = a.spot_whatif(ledger, ALL)
    assert df["saving_usd"].sum() == pytest.approx(9.10 + 0.6)
    assert set(df["workload"]) == {"training", "evaluation"}


def test_mig_profile_recommended_for_8gb_at_20pct_on_an_80gb_h100(ledger, mk):
    catalog = PriceCatalog.load()
    h100 = catalog.gpu_hour_usd("H100")  # 12.29
    mk.write(ledger, *[mk.step("embed", h100, util=20.0, mem_gb=8.0) for _ in range(3)])
    (rec,) = a.rightsizing(ledger, ALL, catalog)
    # compute: 20% of 7 slices at ~80% busy -> ceil(1.75) = 2 slices; memory: 8 GB x 1.2 = 9.6 GB
    # -> 2g.20gb (1g.10gb and 1g.20gb have one slice), billed max(2/7, 20/80) = 2/7 of an H100
    assert rec.kind == "mig" and rec.suggested == "H100:2g.20gb"
    assert rec.runs == 3 and rec.cost_usd == pytest.approx(3 * 12.29)
    assert rec.saving_usd == pytest.approx(3 * 12.29 * (1 - 2 / 7))  # $26.34 over the period
    assert "8.0 GB" in rec.why and "20%" in rec.why


def test_busy_step_gets_no_recommendation_and_starved_one_is_named(ledger, mk):
    s = mk.step
    mk.write(
        ledger,
        s("fit", 12.29, util=95.0, mem_gb=70.0),  # uses the GPU: nothing to say
        s("decode", 12.29, util=15.0, mem_gb=30.0, host_cpu=100.0),  # one core pegged, GPU waiting
        s("wide", 4 * 12.29, gpus=4, devices=1, util=90.0),  # 4 allocated, 1 used
    )
    recs = {r.step: r for r in a.rightsizing(ledger, ALL, PriceCatalog.load())}
    assert set(recs) == {"decode", "wide"}
    assert recs["decode"].kind == "data_starved" and "num_workers" in recs["decode"].why
    assert recs["wide"].kind == "fewer_gpus" and recs["wide"].suggested == "1x H100"
    assert recs["wide"].saving_usd == pytest.approx(3 * 12.29)


def test_anomaly_flags_a_5x_spike_and_not_normal_variation(ledger, mk):
    costs = [10.0, 10.5, 9.8, 10.2, 9.9, 10.1, 10.3, 9.7, 10.4]  # +-5% around $10
    days = [f"2025-06-{d:02d}T10:00:00+00:00" for d in range(1, 11)]
    normal = [mk.step("nightly", c, started=d) for c, d in zip(costs, days[:-1], strict=True)]
    spike = mk.step("nightly", 50.0, gpus=5, started=days[-1])  # 5 GPUs instead of 1: 5x the cost
    mk.write(ledger, *normal, spike)
    df = a.anomalies(ledger, ALL)
    # the spike against the 9 runs before it: sorted 9.7 9.8 9.9 10.0 10.1 10.2 10.3 10.4 10.5 -> median
    # 10.1; |deviations| sorted: 0 .1 .1 .2 .2 .3 .3 .4 .4 -> MAD = 0.2; z(50) = 0.6745 x 39.9 / 0.2 = 134.6.
    # The 6th run (10.1, 5 runs before it: median 10.0, MAD 0.2) scores 0.34: not flagged.
    assert list(df["step_id"]) == [spike.step_id]
    row = df.iloc[0]
    assert row["metric"] == "total_usd" and row["median"] == pytest.approx(10.1)
    assert row["z"] == pytest.approx(0.6745 * 39.9 / 0.2)
    assert "5 GPUs instead of the usual 1" in row["cause"]


def test_no_anomaly_without_enough_history(ledger, mk):
    mk.write(ledger, mk.step("new", 1.0), mk.step("new", 1.1), mk.step("new", 9.0))
    assert a.anomalies(ledger, ALL).empty


# issue 10 item 8: a step refused at preflight ($0, breached) is not a run ---------------------------
def test_a_refused_step_is_not_a_retrain_nor_a_run_to_right_size(ledger, mk):
    s = mk.step
    mk.write(
        ledger,
        s("fit", 8.0, run_key="r1"), s("fit", 12.0, run_key="r2"),  # two retrains that ran
        s("fit", 0.0, run_key="r3", status="refused"),  # refused at preflight: over its budget
        *[s("embed", 12.29, util=20.0, mem_gb=8.0, model="embedder") for _ in range(3)],
        s("embed", 0.0, status="refused", model="embedder"),
    )  # fmt: skip
    df = a.unit_economics(ledger, ALL).set_index("model")
    assert df.loc["ranker", "retrains"] == 2  # not 3
    assert df.loc["ranker", "usd_per_retrain"] == pytest.approx(10.0)  # (8 + 12) / 2, not / 3
    (rec,) = a.rightsizing(ledger, ALL, PriceCatalog.load())
    assert rec.step == "embed" and rec.runs == 3  # not 4


# issue 10 item 9: anomalies per step name and tags, against the runs before each one -----------------
def test_two_teams_train_steps_are_two_histories(ledger, mk):
    # search trains a small ranker daily (~$10); ads trains a big model now and then (~$100, as usual
    # for them). One history per name would call every ads run a 10x spike of search's `train`.
    steps = [mk.step("train", 10.0 + (d % 3) * 0.2, team="search", model="ranker",
                     started=f"2025-06-{d:02d}T10:00:00+00:00") for d in range(1, 21)]  # fmt: skip
    steps += [mk.step("train", 100.0 + (d % 3) * 2, team="ads", model="ctr",
                      started=f"2025-06-{d:02d}T11:00:00+00:00") for d in range(3, 20, 2)]  # fmt: skip
    mk.write(ledger, *steps)
    assert a.anomalies(ledger, ALL).empty
    # a real spike of ads' train is still found, against ads' own past
    spike = mk.step("train", 400.0, team="ads", model="ctr", gpus=4, started="2025-06-25T11:00:00+00:00")
    mk.write(ledger, spike)
    assert list(a.anomalies(ledger, ALL)["step_id"]) == [spike.step_id]


def test_a_run_is_compared_only_with_runs_before_it(ledger, mk):
    # ten runs at $50, then the step was optimised and ran twenty times at $10: the early runs were
    # ordinary when they ran; judged against the later, cheaper runs they would all be "5x spikes"
    days = [f"2025-06-{d:02d}T10:00:00+00:00" for d in range(1, 31)]
    costs = [50.0] * 10 + [10.0] * 20
    mk.write(ledger, *[mk.step("nightly", c, started=d) for c, d in zip(costs, days, strict=True)])
    assert a.anomalies(ledger, ALL).empty
    # and a spike after the change is judged against the recent past
    spike = mk.step("nightly", 30.0, started="2025-07-01T10:00:00+00:00")
    mk.write(ledger, spike)
    assert list(a.anomalies(ledger, ALL)["step_id"]) == [spike.step_id]


def test_long_histories_flag_exactly_what_the_definition_flags(ledger, mk):
    """Two histories of 120 runs each (past the 30-run window, where the report's fast path works),
    noisy, with rises of every size: the report flags exactly the runs that the definition,
    computed here by hand with ``statistics.median``, flags."""
    import random
    import statistics
    from datetime import datetime, timedelta, timezone

    rng = random.Random(11)
    t0 = datetime(2025, 6, 1, tzinfo=timezone.utc)
    steps, expected = [], set()
    for team in ("search", "ads"):
        past: list[float] = []
        for i in range(120):
            cost = round(rng.uniform(9.0, 11.0) * (rng.choice([1.0, 1.0, 1.0, 1.06, 1.2, 3.0])), 4)
            step = mk.step("nightly", cost, team=team, started=(t0 + timedelta(hours=i)).isoformat())
            window = past[-a.ANOMALY_WINDOW :]
            if len(window) >= a.ANOMALY_MIN_HISTORY:
                med = statistics.median(window)
                scale = max(statistics.median(abs(v - med) for v in window), 0.01 * abs(med))
                if 0.6745 * (cost - med) / scale > a.ANOMALY_Z:
                    expected.add(step.step_id)
            past.append(cost)
            steps.append(step)
    mk.write(ledger, *steps)
    flagged = a.anomalies(ledger, ALL)
    assert len(expected) > 10 and set(flagged["step_id"]) == expected


# issue 10 item 10: right-sizing by per-device utilisation; an idle step is idle ---------------------
def test_fewer_gpus_when_one_of_four_visible_gpus_works(ledger, mk):
    four = 4 * 12.29
    mk.write(ledger, *[mk.step("train4", four, gpus=4, device_utils=[88.0, 0.0, 0.0, 0.0]) for _ in range(2)])
    (rec,) = a.rightsizing(ledger, ALL, PriceCatalog.load())
    assert rec.kind == "fewer_gpus" and rec.suggested == "1x H100"  # 4 seen, 3 of them at 0%
    assert rec.saving_usd == pytest.approx(2 * four * 3 / 4)
    assert "at most 1 was busy" in rec.why


def test_a_step_at_zero_util_is_idle_not_a_mig_slice(ledger, mk):
    mk.write(ledger, *[mk.step("sleepy", 12.29, util=0.4, mem_gb=1.0) for _ in range(3)])
    (rec,) = a.rightsizing(ledger, ALL, PriceCatalog.load())
    assert rec.kind == "idle" and "stop" in rec.suggested  # not "fits a 1g.10gb MIG instance"
    assert rec.saving_usd == pytest.approx(3 * 12.29)
    assert "MIG" not in rec.suggested


def test_a_mig_device_without_util_signal_is_not_counted_idle(ledger, mk):
    # MIG on an A100 has no per-instance util: unknown is not 0%, so no GPU is called unused
    mk.write(ledger, mk.step("mig2", 2.0, gpus=2, gpu_type="A100-80GB", device_utils=[None, None], util=None))
    assert a.rightsizing(ledger, ALL, PriceCatalog.load()) == []
