"""Hostile inputs for the parsers (issue 16): the hand-made reproducers as text builders, and the
hypothesis strategies the property tests draw from."""

from __future__ import annotations

import datetime as _dt
import json as _json
import math

from hypothesis import strategies as st


def yaml_bomb_pipeline(levels: int = 9, width: int = 9) -> str:
    """A compiled-pipeline-shaped YAML whose ParallelFor items are "billion laughs" anchors:
    ``width ** levels`` strings from ~5 KB of text."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join(f"*a{i - 1}" for _ in range(width))
        lines.append(f"a{i}: &a{i} [{refs}]")
    anchors = "\n".join(lines)
    return f"""{anchors}
pipelineInfo:
  name: bomb
components:
  comp-for-loop-1:
    dag:
      tasks:
        train:
          componentRef:
            name: comp-train
  comp-train:
    executorLabel: exec-train
deploymentSpec:
  executors:
    exec-train:
      container:
        image: python:3.11
        resources:
          accelerator:
            resourceType: H100
            resourceCount: '1'
root:
  dag:
    tasks:
      for-loop-1:
        componentRef:
          name: comp-for-loop-1
        parameterIterator:
          itemInput: pipelinechannel--loop-item
          items:
            raw: *a{levels - 1}
"""


def diamond_pipeline(levels: int) -> str:
    """Components ``comp-x0 … comp-x{levels-1}``; each ``comp-xi`` (i > 0) is a DAG of two tasks
    calling ``comp-x{i-1}``; ``comp-x0`` is one GPU container. No cycle, ``2 ** (levels-1)`` paths."""
    parts = [
        "pipelineInfo:\n  name: diamond\ncomponents:",
        "  comp-x0:\n    executorLabel: exec-x0",
    ]
    for i in range(1, levels):
        parts.append(
            f"  comp-x{i}:\n    dag:\n      tasks:\n"
            f"        a:\n          componentRef:\n            name: comp-x{i - 1}\n"
            f"        b:\n          componentRef:\n            name: comp-x{i - 1}"
        )
    parts.append(
        "deploymentSpec:\n  executors:\n    exec-x0:\n      container:\n        image: python:3.11\n"
        "        resources:\n          accelerator:\n            resourceType: H100\n            resourceCount: '1'"
    )
    parts.append(f"root:\n  dag:\n    tasks:\n      top:\n        componentRef:\n          name: comp-x{levels - 1}")
    return "\n".join(parts) + "\n"


# --- strategies -----------------------------------------------------------------------------------



def huge_int() -> int:
    """An integer of more digits than Python converts to text (4,300): repr() itself raises."""
    return 10**5000

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, 10**400]),
    st.builds(huge_int),  # not in sampled_from: hypothesis repr()s its elements, and repr() refuses this one
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["15m", "2h", "1h30m", "90s", "-1s", "1e3s", "nan", "inf", "", " ", "1d", "9" * 400 + "d"]),
    st.datetimes(),
    st.dates(),
)


def nested(depth: int = 1200) -> list | dict:
    """A list nested ``depth`` deep: parsers recurse, and Python's limit is about 1,000 frames."""
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


_TOML = {"null": '""', "nan": "nan", "inf": "inf", "sep": " = "}  # TOML has no null: ""
_YAML = {"null": "null", "nan": ".nan", "inf": ".inf", "sep": ": "}


def _flow(value: object, d: dict[str, str]) -> str:
    """``value`` in the flow syntax of TOML or YAML (inline tables and arrays); ``d`` holds the few
    spellings the two differ in. yaml.safe_dump cannot write an integer that repr() refuses."""
    if value is None:
        return d["null"]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() < 10_000 else "9" * 5000
    if isinstance(value, float):
        if math.isnan(value):
            return d["nan"]
        return repr(value) if math.isfinite(value) else (d["inf"] if value > 0 else "-" + d["inf"])
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, str):
        return _json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v, d) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json.dumps(str(k))}{d['sep']}{_flow(v, d)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_value(value: object) -> str:
    return _flow(value, _TOML)


def yaml_value(value: object) -> str:
    return _flow(value, _YAML)


def to_toml(tables: dict[str, object]) -> str:
    """Top-level keys as ``[table]`` sections when they are dicts, else plain ``key = value``."""
    plain = [f"{_json.dumps(k)} = {toml_value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    sections = [
        f"[{_json.dumps(k)}]\n" + "\n".join(f"{_json.dumps(str(kk))} = {toml_value(vv)}" for kk, vv in v.items())
        for k, v in tables.items()
        if isinstance(v, dict)
    ]
    return "\n".join(plain + sections) + "\n"


def tables(shape: dict[str, list[str]]) -> st.SearchStrategy[dict[str, object]]:
    """Dicts shaped like a config file: known tables with known keys (and a stray one) holding any value."""
    table = st.sampled_from(sorted(shape)).flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.dictionaries(st.sampled_from([*shape[name], "stray"]), values, max_size=4),
        )
    )
    return st.lists(table, max_size=4).map(dict)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few characters replaced, inserted or cut, and sometimes truncated."""
    chars = list(text)
    for _ in range(draw(st.integers(0, 6))):
        if not chars:
            break
        at = draw(st.integers(0, len(chars) - 1))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        piece = draw(st.sampled_from(["[", "]", "{", "}", '"', "'", "=", ":", "\n", "-", "&a", "*a", "\x00", "9" * 5000,
                                      "é", "\ufeff", " ", "#", ",", "nan", "1e999"]))
        if op == "replace":
            chars[at] = piece
        elif op == "insert":
            chars.insert(at, piece)
        else:
            del chars[at]
    out = "".join(chars)
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return out


def write(path, content: str | bytes) -> str:
    """Write ``content`` (text as UTF-8, or raw bytes) and return the path as text."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return str(path)
