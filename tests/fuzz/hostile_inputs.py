"""The hand-made hostile inputs of issue 16, as text builders shared by the regression tests and
the ``mlcost`` subprocess checks (so a reproducer is written once)."""

from __future__ import annotations


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
