"""Property: any simulated-GPU trace CSV is read into a Trace or refused with a ConfigError naming
the file, before any step body runs (the choice documented in ``read_csv``)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from fuzz_contract import holds
from fuzz_inputs import mutated, write
from hypothesis import given
from hypothesis import strategies as st

from mlcost.errors import ConfigError
from mlcost.telemetry.traces import read_csv

HEADER = "t_s,device,util_pct,mem_used_gb,power_w,sm_active_pct,tensor_active_pct,event"
VALID = HEADER + "\n0,0,50,10,300,,,\n1.5,0,100,20,650,90,40,\n2,1,0,0,60,,,\n3,1,0,0,60,,,lost\n"
FIELDS = st.one_of(
    st.sampled_from(["0", "1", "50", "100", "101", "-1", "nan", "inf", "1e308", "1e999", "", "lost", "gone", "1.5"]),
    st.text(max_size=12),
    st.integers().map(str),
)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    header = draw(st.sampled_from([HEADER, HEADER.rsplit(",", 3)[0], "t_s,device", "", "a,b,c"]))
    rows = draw(st.lists(st.lists(FIELDS, min_size=0, max_size=9), max_size=6))
    return header + "\n" + "\n".join(",".join(row) for row in rows)


def _read(path: str) -> None:
    trace = holds(lambda: read_csv(Path(path)), names=path)
    if trace is None:
        return
    for device, rows in trace.rows.items():
        for row in rows:
            assert math.isfinite(row.t_s) and row.t_s >= 0 and 0 <= row.util_pct <= 100
        assert all(a.t_s <= b.t_s for a, b in itertools.pairwise(rows))
        mean = trace.mean(device, "power_w", 0.0, 10.0)
        assert math.isfinite(mean)


@given(csv_texts())
def test_any_trace_csv_is_read_or_refused_naming_the_file(tmp_path_factory, text):
    _read(write(tmp_path_factory.mktemp("t") / "trace.csv", text))


@given(mutated(VALID))
def test_a_damaged_trace_is_read_or_refused_naming_the_file(tmp_path_factory, text):
    _read(write(tmp_path_factory.mktemp("t") / "trace.csv", text))


@given(st.binary(max_size=300))
def test_any_bytes_are_read_or_refused_naming_the_file(tmp_path_factory, content):
    _read(write(tmp_path_factory.mktemp("t") / "trace.csv", VALID.encode()[:60] + content))


def test_the_reproducers_of_issue_16_are_refused_naming_the_file(tmp_path):
    latin1 = write(tmp_path / "latin1.csv", (VALID + "4,0,50,10,300,,,# café\n").encode("latin-1"))
    long_field = write(tmp_path / "long.csv", HEADER + "\n0,0,50,10," + "1" * 140_000 + ",,,\n")
    for path, why in ((latin1, "not UTF-8"), (long_field, "field larger than field limit")):
        try:
            read_csv(Path(path))
        except ConfigError as e:
            assert path in str(e) and why in str(e)
        else:
            raise AssertionError(f"{path} was read")


def test_a_bad_trace_stops_the_step_before_its_body_with_a_config_error(tmp_path, monkeypatch):
    from mlcost import meter

    path = write(tmp_path / "latin1.csv", (VALID + "# café\n").encode("latin-1"))
    monkeypatch.setenv("MLCOST_GPU_BACKEND", "simulated")
    monkeypatch.setenv("MLCOST_SIM_TRACE", path)
    ran = []
    try:
        with meter("train", gpu_type="H100", interval=0.05):
            ran.append(True)
    except ConfigError as e:
        assert path in str(e)
    else:
        raise AssertionError("the step ran on a trace it could not read")
    assert not ran
