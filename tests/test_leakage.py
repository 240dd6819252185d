"""The leakage guard (efe_ray.evaluation.leakage): evaluation tasks the checkpoint trained on, found
by id and by the signature of their pairs."""

from __future__ import annotations

from efe_ray.data.task import Task
from efe_ray.evaluation.leakage import find_leaks

from helpers_eval import rule_task


def test_leakage_by_id_and_by_signature():
    a = rule_task("a", lambda g: g[:, ::-1], seed=1)
    b = rule_task("b", lambda g: g.T, seed=2)
    trained = [{"id": t.task_id, "signature": t.pair_set_signature()} for t in (a, b)]
    # A renamed copy of b whose pairs are reordered (and the test pair moved into train).
    pairs = list(b.train + b.test)[::-1]
    renamed = Task("b-renamed", tuple(pairs[:-1]), (pairs[-1],))
    same_id = rule_task("a", lambda g: g, seed=9)  # other pairs, same id
    fresh = rule_task("c", lambda g: g, seed=10)
    leaks = dict(find_leaks([same_id, renamed, fresh], trained))
    assert set(leaks) == {"a", "b-renamed"}
    assert leaks["a"] == "id"
    assert leaks["b-renamed"].startswith("signature") and "'b'" in leaks["b-renamed"]
    assert find_leaks([a], trained) == [("a", "id; signature (as trained task 'a')")]
