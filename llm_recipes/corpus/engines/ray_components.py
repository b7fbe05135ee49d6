"""Connected components of a pair graph on Ray Data, and what the report needs from them.

Large-star / small-star (Kiveris et al. 2014, "Connected Components in MapReduce and Beyond"): every round is two
group-bys over the edges, each node linking its neighbours to the smallest node it sees; after O(log^2 n) rounds
each component is a star around its smallest `_order`, which is the document both engines keep. A round that
changes no edge ends it: the changed flags ride along with the edges, so the check is a sum, not a comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from llm_recipes.corpus.dedup.clusters import UnionFind
from llm_recipes.corpus.engines.ray_io import part_of, partitions_for
from llm_recipes.corpus.engines.ray_ops import KeyBy, attach, column_sum, group_apply, run_starts

MAX_ROUNDS = 100  # O(log^2 n) rounds: a real graph never gets near


def _edges(x: np.ndarray, y: np.ndarray, changed: np.ndarray, partitions: int, key: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "x": pa.array(x, pa.int64()),
            "y": pa.array(y, pa.int64()),
            "changed": pa.array(changed, pa.bool_()),
            "_part": part_of(key, partitions),
        }
    )


class _Oriented:
    """Batch function: pair (a < b) -> edge (x larger, y smaller), keyed by both ends for the large star."""

    def __init__(self, partitions: int):
        self.partitions = partitions

    def __call__(self, table: pa.Table) -> pa.Table:
        x, y = table["b"].to_numpy(), table["a"].to_numpy()
        return _Symmetric(self.partitions)(_edges(x, y, np.zeros(x.size, bool), self.partitions, x))


class _Symmetric:
    """Batch function: each edge in both directions as (u, v), keyed by u."""

    def __init__(self, partitions: int):
        self.partitions = partitions

    def __call__(self, table: pa.Table) -> pa.Table:
        x, y = table["x"].to_numpy(), table["y"].to_numpy()
        u, v = np.concatenate([x, y]), np.concatenate([y, x])
        return pa.table({"u": u, "v": v, "_part": part_of(u, self.partitions)})


class _LargeStar:
    """Group function: every neighbour larger than u linked to the smallest of u and its neighbours. The edge
    changed when that smallest is not u itself."""

    def __init__(self, partitions: int):
        self.partitions = partitions

    def __call__(self, table: pa.Table) -> pa.Table:
        u, v = table["u"].to_numpy(), table["v"].to_numpy()
        sort = np.lexsort((v, u))
        u, v = u[sort], v[sort]
        start = run_starts(u)
        smallest = np.minimum(np.minimum.reduceat(v, np.flatnonzero(start)), u[start]) if u.size else u
        m = smallest[np.cumsum(start) - 1]
        larger = v > u
        x, y = v[larger], m[larger]
        return _edges(x, y, y != u[larger], self.partitions, x)


class _SmallStar:
    """Group function, by the larger end x: x and its smaller neighbours linked to the smallest of them. A group
    changed when x had more than one smaller neighbour, or one of its edges came changed from the large star."""

    def __init__(self, partitions: int):
        self.partitions = partitions

    def __call__(self, table: pa.Table) -> pa.Table:
        x, y, changed = table["x"].to_numpy(), table["y"].to_numpy(), table["changed"].to_numpy(zero_copy_only=False)
        sort = np.lexsort((y, x))
        x, y, changed = x[sort], y[sort], changed[sort]
        distinct = run_starts(x, y)
        x, y = x[distinct], y[distinct]
        changed = np.logical_or.reduceat(changed, np.flatnonzero(distinct)) if changed.size else changed
        start = run_starts(x)
        group = np.cumsum(start) - 1
        m = y[start][group]  # y sorted inside each group: its first is the smallest
        group_changed = np.logical_or.reduceat(changed, np.flatnonzero(start)) if x.size else changed
        group_changed |= np.bincount(group, minlength=int(start.sum())) > 1
        others = y != m
        out_x = np.concatenate([x[start], y[others]])
        out_y = np.concatenate([m[start], m[others]])
        out_changed = np.concatenate([group_changed, group_changed[group][others]])
        return _edges(out_x, out_y, out_changed, self.partitions, out_x)


def connected_components(pairs: Any, edge_count: int) -> Any:
    """The components of the pair graph (`a`, `b` columns) as star edges `child` -> `root`, root the smallest
    member; documents in no pair are their own component and appear nowhere."""
    partitions = partitions_for(2 * edge_count)
    symmetric = pairs.map_batches(_Oriented(partitions), batch_format="pyarrow")
    for _ in range(MAX_ROUNDS):
        large = group_apply(symmetric, _LargeStar(partitions), partitions)
        small = group_apply(large, _SmallStar(partitions), partitions).materialize()
        if not column_sum(small, "changed"):
            return small.select_columns(["x", "y"]).rename_columns({"x": "child", "y": "root"}).materialize()
        symmetric = small.map_batches(_Symmetric(partitions), batch_format="pyarrow")
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


class _Replay:
    """Group function over one component's checked pairs: the datasets engine's loop (`_verified_components`), in
    its order, to count the pairs it rejects. It skips a pair already joined; a failed pair counts only when its
    documents were not yet joined by the confirmed pairs before it."""

    def __call__(self, table: pa.Table) -> pa.Table:
        label, a, b = (table[c].to_numpy() for c in ("label", "a", "b"))
        ok = table["ok"].to_numpy(zero_copy_only=False)
        sort = np.lexsort((b, a, label))
        rejected, sets, index, current = 0, None, {}, None
        for row in sort.tolist():
            if label[row] != current:
                current, index = label[row], {}
                sets = UnionFind(0)
            first, second = (index.setdefault(int(n), _grow(sets)) for n in (a[row], b[row]))
            if sets.find(first) == sets.find(second):
                continue
            if ok[row]:
                sets.union(first, second)
            else:
                rejected += 1
        return pa.table({"rejected": [rejected]})


def _grow(sets: UnionFind) -> int:
    sets.parent.append(len(sets.parent))
    return len(sets.parent) - 1


def replay_rejections(checked: Any, star: Any | None, checked_count: int) -> int:
    """How many plausible pairs the datasets engine rejects by their true Jaccard (`checked`: a, b, ok)."""
    partitions = partitions_for(checked_count)
    if star is None:
        return checked_count - column_sum(checked, "ok")
    labelled = attach(checked, star, "a", "child", {"root": "label"}, partitions, own_key_when_missing=True)
    keyed = labelled.map_batches(KeyBy("label", partitions), batch_format="pyarrow")
    return column_sum(group_apply(keyed, _Replay(), partitions), "rejected")


_TOP_SCHEMA = pa.schema(
    [("root", pa.int64()), ("size", pa.int64()), ("members", pa.list_(pa.int64())), ("clusters", pa.int64())]
)


class _TopClusters:
    """Group function: the number of clusters (roots) here and the largest `limit` (ties: smallest root), each with
    its first `members` documents."""

    def __init__(self, limit: int, members: int):
        self.limit, self.members = limit, members

    def __call__(self, table: pa.Table) -> pa.Table:
        root, child = table["root"].to_numpy(), table["child"].to_numpy()
        if not root.size:
            return pa.table({"root": [], "size": [], "members": [], "clusters": []}, schema=_TOP_SCHEMA)
        sort = np.lexsort((child, root))
        root, child = root[sort], child[sort]
        start = np.flatnonzero(run_starts(root))
        ends = np.append(start[1:], root.size)
        sizes = ends - start + 1
        top = np.lexsort((root[start], -sizes))[: self.limit]
        members = [
            [int(root[start[g]]), *child[start[g] : min(ends[g], start[g] + self.members - 1)].tolist()] for g in top
        ]
        return pa.table(
            {
                "root": pa.array(root[start][top], pa.int64()),
                "size": pa.array(sizes[top], pa.int64()),
                "members": pa.array(members, pa.list_(pa.int64())),
                "clusters": pa.array([start.size] + [0] * (top.size - 1), pa.int64()),
            }
        )


def top_clusters(star: Any, duplicates: int, limit: int, members: int) -> tuple[int, list[dict]]:
    """(number of clusters, the `limit` largest as {size, root, members}) of the star edges."""
    partitions = partitions_for(duplicates)
    keyed = star.map_batches(KeyBy("root", partitions), batch_format="pyarrow")
    rows = group_apply(keyed, _TopClusters(limit, members), partitions).take_all()
    clusters = sum(row["clusters"] for row in rows)
    return clusters, sorted(rows, key=lambda row: (-row["size"], row["root"]))[:limit]
