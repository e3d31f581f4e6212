"""NvmlBackend through the real pynvml against the C stand-in libnvidia-ml.so.1 (issue 15).

The same scenarios and assertions as the simulated suite (tests/telemetry/nvml_scenarios.py), but
every value crosses ctypes: pynvml's struct layouts, ``_v2`` symbol names and return codes meet a C
library built from nvml.h's declarations. Each runs in a subprocess with ``MLCOST_GPU_BACKEND=nvml``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import nvml_scenarios as sc
import pytest

SYMBOLS_SEEN: set[str] = set()


@pytest.mark.parametrize("name", sorted(sc.SCENARIOS))
def test_scenario_through_pynvml_and_the_standin(name, run_scenario):
    result = run_scenario("sampler", name)
    SYMBOLS_SEEN.update(result["symbols"])
    sc.check(sc.SCENARIOS[name], result)


@pytest.mark.parametrize("name", sc.ERROR_SCENARIOS)
def test_a_failing_call_leaves_a_degraded_record_and_the_steps_value(name, run_scenario):
    sc.check_meter(sc.SCENARIOS[name], run_scenario("meter", name))


def test_the_standin_exports_exactly_what_the_backend_calls(standin_lib, run_scenario):
    """Every NVML symbol pynvml looked up for the backend, and nothing more. The extras: the init
    pynvml does not use, the driver version gpu_check reads, the tests' clock, and nvmlErrorString,
    which pynvml calls only for a code missing from its own table of messages."""
    build = sys.modules["nvml_standin_build"]
    exported = build.exported_symbols(standin_lib)
    if exported is None:
        pytest.skip("no nm on PATH to list the library's symbols")
    seen = set(SYMBOLS_SEEN)
    for name in ("h100_pair", "mig_h100_two_profiles", "gpu_lost"):  # when run alone
        seen.update(run_scenario("sampler", name)["symbols"])
    assert seen <= exported, seen - exported
    extras = {"nvmlInit_v2", "nvmlSystemGetDriverVersion", "nvmlStandinSetTime", "nvmlStandinTraceTime",
              "nvmlStandinLayout"}
    assert exported - seen - {"nvmlErrorString"} == extras


LAYOUT = textwrap.dedent("""
    import ctypes, json, sys
    import pynvml as p
    lib = ctypes.CDLL(sys.argv[1])
    lib.nvmlStandinLayout.restype = ctypes.c_long
    lib.nvmlStandinLayout.argtypes = [ctypes.c_char_p]
    pairs = {
        "nvmlMemory_t": ctypes.sizeof(p.c_nvmlMemory_t), "nvmlMemory_t.used": p.c_nvmlMemory_t.used.offset,
        "nvmlUtilization_t": ctypes.sizeof(p.c_nvmlUtilization_t),
        "nvmlDeviceAttributes_t": ctypes.sizeof(p.c_nvmlDeviceAttributes),
        "nvmlDeviceAttributes_t.gpuInstanceSliceCount": p.c_nvmlDeviceAttributes.gpuInstanceSliceCount.offset,
        "nvmlDeviceAttributes_t.memorySizeMB": p.c_nvmlDeviceAttributes.memorySizeMB.offset,
        "nvmlGpmSupport_t": ctypes.sizeof(p.c_nvmlGpmSupport_t),
        "nvmlGpmMetric_t": ctypes.sizeof(p.c_nvmlGpmMetric_t),
        "nvmlGpmMetric_t.nvmlReturn": p.c_nvmlGpmMetric_t.nvmlReturn.offset,
        "nvmlGpmMetric_t.value": p.c_nvmlGpmMetric_t.value.offset,
        "nvmlGpmMetric_t.metricInfo": p.c_nvmlGpmMetric_t.metricInfo.offset,
        "nvmlGpmMetricsGet_t.sample1": p.c_nvmlGpmMetricsGet_t.sample1.offset,
        "nvmlGpmMetricsGet_t.sample2": p.c_nvmlGpmMetricsGet_t.sample2.offset,
        "nvmlGpmMetricsGet_t.metrics": p.c_nvmlGpmMetricsGet_t.metrics.offset,
    }
    print(json.dumps({k: [v, lib.nvmlStandinLayout(k.encode())] for k, v in pairs.items()}))
""")


def test_pynvml_structs_have_nvml_h_layouts(standin_lib, standin_env):
    """Every struct the backend exchanges with NVML, as pynvml's ctypes declares it, against
    nvml.h's declaration as the C compiler lays it out (the metrics array's length differs by
    header version; its element and offset do not)."""
    import json

    done = subprocess.run([sys.executable, "-c", LAYOUT, str(standin_lib / "libnvidia-ml.so.1")], env=standin_env(),
                          capture_output=True, text=True, timeout=60, check=True)
    layouts = json.loads(done.stdout)
    assert all(c >= 0 for _, c in layouts.values()), layouts
    assert {k: p for k, (p, c) in layouts.items() if p != c} == {}, layouts


METER = textwrap.dedent("""
    import ctypes, json, sys, time
    from mlcost import meter
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    lib.nvmlStandinTraceTime.restype = ctypes.c_double
    kw = json.loads(sys.argv[1])
    with meter("train", interval=0.01, **kw) as m:
        # the trace time the sampler started at: the library's clock started at nvmlInit, before it
        t0 = lib.nvmlStandinTraceTime() - (time.monotonic() - m._sampler.start_t)
        time.sleep(float(sys.argv[2]))
    print(t0)
    print(m.cost.model_dump_json())
""")


def _meter(standin_env, tmp_path, rows, seconds, header=sc.HEADER, **kw):
    from mlcost.step import StepCost

    trace = tmp_path / "trace.csv"
    trace.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    env = standin_env(MLCOST_GPU_BACKEND="nvml", MLCOST_NVML_STANDIN_TRACE=str(trace),
                      **{f"MLCOST_NVML_STANDIN_{k.upper()}": str(v) for k, v in kw.pop("standin", {}).items()})
    import json

    done = subprocess.run([sys.executable, "-c", METER, json.dumps(kw), str(seconds)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    *_, t0, record = done.stdout.strip().splitlines()
    return StepCost.model_validate_json(record), done.stderr, float(t0)


def test_a_metered_step_through_pynvml_matches_the_trace_within_one_percent(standin_env, tmp_path):
    """tests/test_meter.py's figures, in real time, configured by the environment alone."""
    # the changes come after the meter's first ledger write, which imports and opens the store (~1 s
    # on a fresh process): the GIL it holds can stretch one sampling gap across a change
    rows = [(0.0, 0, 90, 30, 500, 40), (2.0, 0, 0, 30, 120, 0), (3.0, 0, 60, 50, 400, 10)]
    from mlcost.telemetry.traces import load_trace, truth

    step, _, t0 = _meter(standin_env, tmp_path, rows, 4.0, standin={"gpu": "A100-80GB"})
    (device,) = step.devices
    expected = truth(load_trace(tmp_path / "trace.csv"), 0, t0, t0 + device.seconds)
    assert step.telemetry == "nvml" and not step.simulated and step.util_signal == "nvml_util"
    assert step.util_mean_pct == pytest.approx(expected.util_mean_pct, rel=0.01)
    assert device.idle_seconds == pytest.approx(expected.idle_seconds, rel=0.01)
    assert device.energy_method == "counter"
    assert device.energy_kwh * 3.6e6 == pytest.approx(expected.energy_j, rel=0.01)
    assert device.power_integrated_kwh == pytest.approx(device.energy_kwh, rel=0.01)
    assert step.mem_peak_gb == pytest.approx(50) and step.gpu_type == "A100-80GB"
    assert step.total_usd == pytest.approx(5.12 * step.duration_s / 3600, rel=1e-6)


def test_mig_instances_of_two_profiles_are_each_priced_as_their_own(standin_env, tmp_path):
    """Issue 10 item 6: 1g.10gb + 3g.40gb with no gpu_type costs the two profiles' prices, not 2x the first."""
    from mlcost import PriceCatalog

    rows = [(0.0, 0, 50, 5, 100), (0.0, 1, 50, 20, 300)]
    step, _, _ = _meter(standin_env, tmp_path, rows, 0.2, header=sc.HEADER.rsplit(",", 1)[0],
                     standin={"gpu": "H100", "mig": "1g.10gb,3g.40gb"})
    catalog = PriceCatalog.load()
    hourly = catalog.gpu_hour_usd("H100:1g.10gb") + catalog.gpu_hour_usd("H100:3g.40gb")
    assert [d.mig_profile for d in step.devices] == ["1g.10gb", "3g.40gb"] and step.gpus == 2
    assert step.total_usd == pytest.approx(hourly * step.duration_s / 3600, rel=1e-6)
    assert step.util_signal == "gpm_sm_activity" and step.telemetry == "nvml"


def test_a_declared_gpu_type_other_than_the_detected_one_is_kept_beside_it(standin_env, tmp_path):
    """Issue 10 item 7: gpu_type="L4" on an H100 is priced as declared, says so once, keeps both."""
    rows = [(0.0, 0, 50, 5, 300)]
    step, stderr, _ = _meter(standin_env, tmp_path, rows, 0.1, header=sc.HEADER.rsplit(",", 1)[0], gpu_type="L4")
    assert (step.gpu_type, step.detected_gpu_type, step.gpu_type_mismatch) == ("L4", "H100", True)
    assert stderr.count("gpu_type='L4' was declared but this job runs on H100") == 1


def test_the_gpu_suite_passes_against_the_standin(standin_env, tmp_path):
    """``MLCOST_GPU_BACKEND=nvml pytest -m gpu``, the command for a real GPU, run here on the stand-in."""
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,device,util_pct,mem_used_gb,power_w\n0,0,80,20,400\n0,1,10,5,150\n")
    env = standin_env(MLCOST_GPU_BACKEND="nvml", MLCOST_NVML_STANDIN_TRACE=str(trace),
                      MLCOST_NVML_STANDIN_DEVICES="2")
    here = __import__("pathlib").Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                           str(here / "telemetry" / "test_gpu.py")], env=env, capture_output=True, text=True,
                          timeout=300, cwd=here.parent)
    assert done.returncode == 0 and " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-3000:]


def test_without_a_compiler_the_build_says_so(monkeypatch, tmp_path):
    """What the suite's skip reason rests on: no cc/gcc/clang (and no $CC) is named, not a crash."""
    build = sys.modules["nvml_standin_build"]
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    assert build.compiler() is None
    with pytest.raises(build.BuildError, match="no C compiler"):
        build.build(tmp_path / "out")
