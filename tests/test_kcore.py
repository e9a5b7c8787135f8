"""k-core: the Spark implementation equals the maximal sub-graph satisfying both degree bounds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lewin.udfs.kcore import kcore, kcore_reference

pytestmark = pytest.mark.transforms


def _valid(edges, ku, ki) -> bool:
    du, di = {}, {}
    for u, i in edges:
        du[u] = du.get(u, 0) + 1
        di[i] = di.get(i, 0) + 1
    return all(du[u] >= ku and di[i] >= ki for u, i in edges)


def brute_force_maximal(edges: set, ku: int, ki: int) -> set:
    """Largest edge set induced by some (users, items) vertex subset and satisfying both bounds."""
    users = sorted({u for u, _ in edges})
    items = sorted({i for _, i in edges})
    best: set = set()
    for nu in range(len(users) + 1):
        for us in itertools.combinations(users, nu):
            sub_u = set(us)
            for ni in range(len(items) + 1):
                for its in itertools.combinations(items, ni):
                    sub = {(u, i) for u, i in edges if u in sub_u and i in set(its)}
                    if len(sub) > len(best) and _valid(sub, ku, ki):
                        best = sub
    return best


small_graphs = st.sets(st.tuples(st.sampled_from("abcde"), st.sampled_from("VWXYZ")), max_size=18)


@settings(max_examples=300, deadline=None)
@given(small_graphs, st.integers(1, 4), st.integers(1, 4))
def test_reference_peeling_is_the_maximal_core(edges, ku, ki):
    core = kcore_reference(edges, ku, ki)
    assert _valid(core, ku, ki)
    # every valid sub-graph is inside the peeled one (maximality), checked against brute force
    assert core == brute_force_maximal(edges, ku, ki)


def _spark_core(spark, store, edges, ku, ki):
    df = spark.createDataFrame(sorted(edges), "user_id string, item_id string")
    core, rounds = kcore(df, ku, ki, store.checkpointer(("_kc_0", "_kc_1")))
    return {(r["user_id"], r["item_id"]) for r in core.collect()}, rounds


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sets(st.tuples(st.integers(0, 11).map(lambda x: f"u{x}"), st.integers(0, 7).map(lambda x: f"i{x}")),
               min_size=1, max_size=60), st.integers(1, 5), st.integers(1, 4))
def test_spark_kcore_equals_the_maximal_subgraph(spark, store, edges, ku, ki):
    got, rounds = _spark_core(spark, store, edges, ku, ki)
    assert got == kcore_reference(edges, ku, ki)
    assert _valid(got, ku, ki)
    assert rounds[-1].dropped == 0


def test_a_chain_that_needs_many_rounds(spark, store):
    # a path u0-i0-u1-i1-…: each round strips the degree-1 ends, so it unravels one step per round;
    # a complete 2x2 block beside it is a valid core and stays
    edges = {(f"u{k}", f"i{k}") for k in range(8)} | {(f"u{k + 1}", f"i{k}") for k in range(8)}
    block = {("a", "X"), ("a", "Y"), ("b", "X"), ("b", "Y")}
    got, rounds = _spark_core(spark, store, edges | block, 2, 2)
    assert got == block == kcore_reference(edges | block, 2, 2)
    assert len(rounds) >= 5
    assert [r.interactions for r in rounds] == sorted([r.interactions for r in rounds], reverse=True)
    assert sum(r.dropped for r in rounds) == len(edges)
