"""Largest total weight of tasks that can run at the same time in one DAG.

Two tasks can overlap only if neither is (transitively) upstream of the other, so any set of tasks
running at one instant is an *antichain* of the dependency order, and the heaviest antichain is a
sound upper bound on concurrent GPUs — and a tight one, since durations can always be chosen to make
it happen. By the weighted form of Dilworth's theorem it equals the smallest number of paths through
the DAG that pass each task at least its weight times: a minimum flow with lower bounds, computed
exactly in polynomial time rather than guessed or searched for exponentially.

The flow runs on the DAG's direct edges (a path may pass through a task without counting it), not
on its transitive closure: the closure has a quadratic number of edges, and a hostile 500-task chain
took seconds. A feasible flow sends each task's weight along source -> task -> sink; the minimum
flow is that minus a maximum flow from sink to source in its residual network (Dinic's algorithm,
iterative, so a long chain never meets Python's recursion limit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Set


def max_weight_antichain(weights: Mapping[str, int], upstream: Mapping[str, Set[str]]) -> int:
    """The heaviest set of pairwise unordered nodes.

    :param weights: node -> non-negative integer weight (GPUs).
    :param upstream: node -> the nodes it directly depends on; names not in ``weights`` are ignored.
    :raises ValueError: the dependencies form a cycle.
    """
    edges = _edges(weights, upstream)
    total = sum(weights.values())
    positive = [n for n in weights if weights[n] > 0]
    if len(positive) <= 1 or not edges:
        return total
    # Residual network of the feasible flow: node v is v_in = 2i, v_out = 2i + 1.
    index = {n: i for i, n in enumerate(weights)}
    source, sink = 2 * len(index), 2 * len(index) + 1  # the flow runs from `sink` back to `source`
    big = total + 1
    cap: list[dict[int, int]] = [{} for _ in range(2 * len(index) + 2)]

    def add(a: int, b: int, c: int) -> None:
        cap[a][b] = cap[a].get(b, 0) + c
        cap[b].setdefault(a, 0)

    for n, i in index.items():
        add(2 * i, 2 * i + 1, big)  # pass through a task without counting it again
        if weights[n] > 0:
            add(sink, 2 * i + 1, weights[n])  # the feasible flow's v_out -> sink, undone
            add(2 * i, source, weights[n])  # the feasible flow's source -> v_in, undone
    for up, down in edges:
        add(2 * index[up] + 1, 2 * index[down], big)
    return total - _max_flow(cap, sink, source)


def _edges(weights: Mapping[str, int], upstream: Mapping[str, Set[str]]) -> list[tuple[str, str]]:
    """The direct (upstream, downstream) edges between known nodes; ValueError on a cycle
    (Kahn's algorithm: no recursion, whatever the depth)."""
    edges = [(up, node) for node in weights for up in upstream.get(node, ()) if up in weights and up != node]
    if any(node in upstream.get(node, ()) for node in weights):
        node = next(n for n in weights if n in upstream.get(n, ()))
        raise ValueError(f"dependency cycle through task {node!r}")
    indegree = dict.fromkeys(weights, 0)
    downstream: dict[str, list[str]] = {n: [] for n in weights}
    for up, down in edges:
        indegree[down] += 1
        downstream[up].append(down)
    ready = deque(n for n, d in indegree.items() if d == 0)
    seen = 0
    while ready:
        node = ready.popleft()
        seen += 1
        for child in downstream[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if seen != len(weights):
        node = next(n for n, d in indegree.items() if d > 0)
        raise ValueError(f"dependency cycle through task {node!r}")
    return edges


def _max_flow(cap: list[dict[int, int]], source: int, sink: int) -> int:
    """Dinic: BFS levels, then blocking flows found by an iterative depth-first search."""
    adjacency = [list(c) for c in cap]
    flow = 0
    while True:
        level = [-1] * len(cap)
        level[source] = 0
        queue = deque([source])
        while queue:
            a = queue.popleft()
            for b in adjacency[a]:
                if level[b] < 0 and cap[a][b] > 0:
                    level[b] = level[a] + 1
                    queue.append(b)
        if level[sink] < 0:
            return flow
        pointer = [0] * len(cap)
        while True:
            path = [source]
            while path and path[-1] != sink:
                a = path[-1]
                out = adjacency[a]
                while pointer[a] < len(out):
                    b = out[pointer[a]]
                    if cap[a][b] > 0 and level[b] == level[a] + 1:
                        path.append(b)
                        break
                    pointer[a] += 1
                else:
                    path.pop()  # a dead end for this phase
                    level[a] = -1
                    if path:
                        pointer[path[-1]] += 1
            if not path:
                break
            pushed = min(cap[path[i]][path[i + 1]] for i in range(len(path) - 1))
            for i in range(len(path) - 1):
                cap[path[i]][path[i + 1]] -= pushed
                cap[path[i + 1]][path[i]] += pushed
            flow += pushed
