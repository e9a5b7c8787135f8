"""Iterated (user, item) k-core: keep items with >= k_item distinct users and users with
>= k_user distinct items, repeated until a round removes nothing (one pass is not a k-core).

Each round is a pair of aggregations and semi-joins, then a checkpoint (the job writes the
surviving edges to a table and reads them back) so the plan stays one round deep however many
rounds it takes. Nothing is collected to the driver but one count per round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclass(frozen=True)
class Round:
    round: int
    users: int
    items: int
    interactions: int
    dropped: int


def kcore(
    edges: DataFrame,
    min_user_degree: int,
    min_item_degree: int,
    checkpoint: Callable[[DataFrame, int], DataFrame],
    max_rounds: int = 100,
) -> tuple[DataFrame, list[Round]]:
    """The maximal sub-graph of ``edges`` (columns ``user_id``, ``item_id``) in which every user
    has >= ``min_user_degree`` items and every item >= ``min_item_degree`` users.

    Pruning both sides at once each round reaches the same fixed point as alternating (the
    maximal core is unique and every pruned edge is outside it)."""
    cur = checkpoint(edges.select("user_id", "item_id").distinct(), 0)
    n = cur.count()
    rounds: list[Round] = []
    for r in range(1, max_rounds + 1):
        items_ok = cur.groupBy("item_id").count().where(F.col("count") >= min_item_degree).select("item_id")
        users_ok = cur.groupBy("user_id").count().where(F.col("count") >= min_user_degree).select("user_id")
        nxt = cur.join(items_ok, "item_id", "left_semi").join(users_ok, "user_id", "left_semi")
        nxt = checkpoint(nxt.select("user_id", "item_id"), r)
        stats = nxt.agg(
            F.count(F.lit(1)).alias("e"), F.countDistinct("user_id").alias("u"), F.countDistinct("item_id").alias("i")
        ).collect()[0]
        m = int(stats["e"])
        rounds.append(Round(r, int(stats["u"]), int(stats["i"]), m, n - m))
        cur = nxt
        if m == n:
            return cur, rounds
        n = m
    raise RuntimeError(f"k-core did not converge in {max_rounds} rounds (curate.kcore.max_rounds)")


def kcore_reference(edges: set[tuple[str, str]], min_user: int, min_item: int) -> set[tuple[str, str]]:
    """Plain-Python peeling, for tests: remove any vertex below its bound until none is."""
    cur = set(edges)
    while True:
        du: dict[str, int] = {}
        di: dict[str, int] = {}
        for u, i in cur:
            du[u] = du.get(u, 0) + 1
            di[i] = di.get(i, 0) + 1
        nxt = {(u, i) for u, i in cur if du[u] >= min_user and di[i] >= min_item}
        if nxt == cur:
            return cur
        cur = nxt
