"""Sizing the scoring actor pool from `ray.nodes()`: an actor must fit on one node, and the pool must leave
a CPU of the cluster to the read, check and write tasks (else a small cluster hangs with 0 rows done)."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from jobs.engines import cluster
from jobs.engines.cluster import wait_for_pool
from jobs.engines.pool import PoolSize, size_pool
from jobs.errors import UsageError
from jobs.spec.schema import ScoringSpec


def node(address: str, alive: bool = True, **resources: float) -> dict:
    """A node as `ray.nodes()` describes it, with the markers and memory Ray adds to every node."""
    return {
        "NodeID": address,
        "Alive": alive,
        "NodeManagerAddress": address,
        "Resources": {"memory": 8e9, "object_store_memory": 2e9, f"node:{address}": 1.0, **resources},
    }


def sized(pool: PoolSize) -> tuple:
    return pool.min_actors, pool.max_actors, pool.cpus_per_actor, pool.gpus_per_actor


def test_one_two_cpu_node_sizes_as_the_single_node_rule_did():
    # The default spec (actors 1..4, one CPU each) on a laptop: one actor, one CPU left for reading.
    assert sized(size_pool(ScoringSpec(), [node("127.0.0.1", CPU=2)])) == (1, 1, 1.0, 0.0)
    assert sized(size_pool(ScoringSpec(), [node("127.0.0.1", CPU=1)])) == (1, 1, 0.5, 0.0)
    assert sized(size_pool(ScoringSpec(), [node("127.0.0.1", CPU=16)])) == (1, 4, 1.0, 0.0)


def test_custom_resource_places_actors_on_the_nodes_that_offer_it(caplog):
    spec = ScoringSpec(resources={"worker_node": 1})
    with caplog.at_level(logging.INFO, logger="jobs.engines.pool"):
        pool = size_pool(spec, [node("127.0.0.2", CPU=1), node("127.0.0.3", CPU=1, worker_node=2)])
    assert sized(pool) == (1, 1, 1.0, 0.0)
    assert pool.resources == {"worker_node": 1.0}
    assert "127.0.0.2 0, 127.0.0.3 1" in caplog.text


def test_a_node_without_the_custom_resource_holds_no_actor():
    spec = ScoringSpec(actors={"min": 1, "max": 16}, resources={"worker_node": 1})
    nodes = [node("10.0.0.1", CPU=32), node("10.0.0.2", CPU=4, worker_node=1), node("10.0.0.3", CPU=4, worker_node=3)]
    # 10.0.0.2 holds 1 (one worker_node), 10.0.0.3 holds 3 (three worker_node): the big node none.
    assert sized(size_pool(spec, nodes)) == (1, 4, 1.0, 0.0)


def test_gpu_actors_go_to_gpu_nodes_and_share_their_cpus():
    spec = ScoringSpec(actors={"min": 1, "max": 8}, gpus_per_actor=1)
    head = node("10.0.0.1", CPU=8)
    assert sized(size_pool(spec, [head, node("10.0.0.2", CPU=8, GPU=1), node("10.0.0.3", CPU=8, GPU=1)])) == (
        1,
        2,
        1.0,
        1.0,
    )
    # Four GPUs next to two CPUs: each actor gets half a CPU so that every GPU is used.
    assert sized(size_pool(spec, [head, node("10.0.0.2", CPU=2, GPU=4)])) == (1, 4, 0.5, 1.0)
    half = ScoringSpec(actors={"min": 1, "max": 8}, gpus_per_actor=0.5)
    assert sized(size_pool(half, [node("10.0.0.2", CPU=16, GPU=1), node("10.0.0.3", CPU=16, GPU=2)])) == (
        1,
        6,
        1.0,
        0.5,
    )


def test_actors_together_leave_a_cpu_for_reads_and_writes():
    # Two 1-CPU nodes: two 1-CPU actors would fit, one per node, but then nothing could read.
    assert sized(size_pool(ScoringSpec(), [node("10.0.0.1", CPU=1), node("10.0.0.2", CPU=1)])) == (1, 1, 1.0, 0.0)
    spec = ScoringSpec(actors={"min": 1, "max": 64}, cpus_per_actor=2)
    pool = size_pool(spec, [node("10.0.0.1", CPU=4), node("10.0.0.2", CPU=4), node("10.0.0.3", CPU=3)])
    assert sized(pool) == (1, 5, 2.0, 0.0)  # 2 + 2 + 1 fit, using 10 of the 11 CPUs


def test_cpus_per_actor_shrinks_to_the_largest_node():
    spec = ScoringSpec(actors={"min": 1, "max": 8}, cpus_per_actor=8)
    assert sized(size_pool(spec, [node("10.0.0.1", CPU=4), node("10.0.0.2", CPU=4)])) == (1, 1, 4.0, 0.0)


def test_dead_nodes_are_ignored():
    nodes = [node("10.0.0.1", alive=False, CPU=64, GPU=8), node("10.0.0.2", CPU=2)]
    assert sized(size_pool(ScoringSpec(), nodes)) == (1, 1, 1.0, 0.0)
    with pytest.raises(UsageError, match="has no GPUs: set it to 0 to score on CPUs; nodes: 10.0.0.2 CPU 2$"):
        size_pool(ScoringSpec(gpus_per_actor=1), nodes)
    with pytest.raises(UsageError, match="no alive nodes"):
        size_pool(ScoringSpec(), nodes[:1])


def test_actors_max_caps_and_min_follows():
    many = [node(f"10.0.0.{i}", CPU=16) for i in range(4)]
    assert sized(size_pool(ScoringSpec(actors={"min": 2, "max": 3}), many)) == (2, 3, 1.0, 0.0)
    assert sized(size_pool(ScoringSpec(actors={"min": 3, "max": 4}), [node("10.0.0.1", CPU=3)])) == (2, 2, 1.0, 0.0)


def test_nothing_fits_names_the_spec_key_and_what_the_nodes_offer():
    nodes = [node("127.0.0.2", CPU=1), node("127.0.0.3", CPU=1, worker_node=2)]
    with pytest.raises(UsageError) as missing:
        size_pool(ScoringSpec(resources={"gpu_pool": 1}), nodes)
    assert str(missing.value) == (
        "scoring.resources asks gpu_pool=1 per actor but no node of the cluster offers "
        "gpu_pool; nodes: 127.0.0.2 CPU 1, 127.0.0.3 CPU 1 worker_node 2"
    )
    with pytest.raises(UsageError) as short:
        size_pool(ScoringSpec(resources={"worker_node": 3}), nodes)
    assert str(short.value) == (
        "scoring.resources asks worker_node=3 per actor but no node of the cluster offers "
        "3 worker_node; nodes: 127.0.0.2 CPU 1, 127.0.0.3 CPU 1 worker_node 2"
    )
    with pytest.raises(UsageError) as apart:
        size_pool(
            ScoringSpec(gpus_per_actor=1, resources={"worker_node": 1}),
            [node("10.0.0.1", CPU=8, GPU=1), node("10.0.0.2", CPU=8, worker_node=1)],
        )
    assert str(apart.value) == (
        "no node of the cluster with CPUs offers all that an actor asks "
        "(GPU=1, worker_node=1): change scoring.gpus_per_actor or scoring.resources; "
        "nodes: 10.0.0.1 CPU 8 GPU 1, 10.0.0.2 CPU 8 worker_node 1"
    )


def test_spec_checks_the_new_keys():
    assert ScoringSpec().resources == {} and ScoringSpec().gpu_wait == "0s"
    with pytest.raises(ValidationError, match="scoring.cpus_per_actor"):
        ScoringSpec(resources={"CPU": 2})
    with pytest.raises(ValidationError, match="must be > 0"):
        ScoringSpec(resources={"worker_node": 0})
    with pytest.raises(ValidationError, match="not a duration"):
        ScoringSpec(gpu_wait="a while")


def test_waiting_returns_once_gpu_nodes_join(monkeypatch):
    import ray

    answers = iter(
        [
            [node("10.0.0.1", CPU=4)],
            [node("10.0.0.1", CPU=4)],
            [node("10.0.0.1", CPU=4), node("10.0.0.2", CPU=8, GPU=1)],
        ]
    )
    requests = []
    monkeypatch.setattr(ray, "nodes", lambda: next(answers))
    monkeypatch.setattr(cluster, "_request_resources", requests.append)
    pool = wait_for_pool(ScoringSpec(gpus_per_actor=1, gpu_wait="1m"), poll_s=0.01)
    assert sized(pool) == (1, 1, 1.0, 1.0)
    assert requests == [[{"GPU": 1.0}], []]  # asked for one actor's GPU, then withdrew the request


@pytest.fixture(scope="module")
def local_ray():
    """The Ray this process already runs (in-process test runs keep theirs up), else a 2-CPU one for this module."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    if started:
        ray.shutdown()


def test_gpu_wait_on_a_cluster_without_gpus_refuses_after_the_wait(local_ray):
    if any(n["Alive"] and n["Resources"].get("GPU") for n in local_ray.nodes()):
        pytest.skip("this Ray has GPUs")
    with pytest.raises(UsageError) as waited:
        wait_for_pool(ScoringSpec(gpus_per_actor=1, gpu_wait="1s"))
    assert str(waited.value).startswith(
        "waited 1s (scoring.gpu_wait) for GPU nodes, none came: "
        "scoring.gpus_per_actor is 1 but the Ray cluster has no GPUs"
    )
    with pytest.raises(UsageError) as at_once:
        wait_for_pool(ScoringSpec(gpus_per_actor=1))
    assert str(at_once.value).startswith("scoring.gpus_per_actor is 1 but the Ray cluster has no GPUs")
    assert wait_for_pool(ScoringSpec()).max_actors >= 1
