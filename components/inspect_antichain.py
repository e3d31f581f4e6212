"""Largest total weight of tasks that can run at the same time in one DAG.

Two tasks can overlap only if neither is (transitively) upstream of the other, so any set of tasks
running at one instant is an *antichain* of the dependency order, and the heaviest antichain is a
sound upper bound on concurrent GPUs — and a tight one, since durations can always be chosen to make
it happen. By the weighted form of Dilworth's theorem it equals the total weight minus a maximum flow
in a bipartite network built on the transitive closure, so it is exact in polynomial time rather
than a guess or an exponential search.
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
    later = _descendants(weights, upstream)
    nodes = [n for n in weights if weights[n] > 0]
    if len(nodes) <= 1:
        return sum(weights[n] for n in nodes)
    # Network: source -> L(v) [w(v)], L(v) -> R(u) [inf] when v precedes u, R(u) -> sink [w(u)].
    index = {n: i for i, n in enumerate(nodes)}
    size = 2 * len(nodes) + 2
    source, sink = size - 2, size - 1
    big = sum(weights[n] for n in nodes) + 1
    cap: list[dict[int, int]] = [{} for _ in range(size)]

    def add(a: int, b: int, c: int) -> None:
        cap[a][b] = cap[a].get(b, 0) + c
        cap[b].setdefault(a, 0)

    for n in nodes:
        add(source, index[n], weights[n])
        add(len(nodes) + index[n], sink, weights[n])
        for m in later[n]:
            if m in index:
                add(index[n], len(nodes) + index[m], big)
    return sum(weights[n] for n in nodes) - _max_flow(cap, source, sink)


def _descendants(weights: Mapping[str, int], upstream: Mapping[str, Set[str]]) -> dict[str, set[str]]:
    downstream: dict[str, set[str]] = {n: set() for n in weights}
    for node in weights:
        for up in upstream.get(node, ()):
            if up in downstream:
                downstream[up].add(node)
    result: dict[str, set[str]] = {}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str) -> set[str]:
        if state.get(node) == 2:
            return result[node]
        if state.get(node) == 1:
            raise ValueError(f"dependency cycle through task {node!r}")
        state[node] = 1
        seen: set[str] = set()
        for child in downstream[node]:
            seen.add(child)
            seen |= visit(child)
        state[node] = 2
        result[node] = seen
        return seen

    for node in weights:
        visit(node)
    return result


def _max_flow(cap: list[dict[int, int]], source: int, sink: int) -> int:
    """Edmonds–Karp; pipelines have tens of tasks per DAG, so simplicity beats speed here."""
    flow = 0
    while True:
        parent = {source: source}
        queue = deque([source])
        while queue and sink not in parent:
            a = queue.popleft()
            for b, c in cap[a].items():
                if c > 0 and b not in parent:
                    parent[b] = a
                    queue.append(b)
        if sink not in parent:
            return flow
        path_cap, b = None, sink
        while b != source:
            a = parent[b]
            path_cap = cap[a][b] if path_cap is None else min(path_cap, cap[a][b])
            b = a
        assert path_cap is not None
        b = sink
        while b != source:
            a = parent[b]
            cap[a][b] -= path_cap
            cap[b][a] += path_cap
            b = a
        flow += path_cap
