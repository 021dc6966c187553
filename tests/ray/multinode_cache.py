"""Run by tests/ray/test_cache.py in its own process: a real 3-node Ray cluster on this
machine (head + nodes with custom resources), one cache server per node, two jobs, a node
loss and a replacement node. Prints one JSON document."""

import json
import sys
import time

import ray
from ray.cluster_utils import Cluster

from forgeline.cache import CacheConfig, CachedDataset, connect
from forgeline.ray.cache import node_cache_stats

manifest, port, temp_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
config = CacheConfig(capacity_bytes=2**20, server_name="multinode-test", server_concurrency=4)


@ray.remote(num_cpus=0)
def read(indices: list[int]) -> dict:
    """A worker: read samples through its own node's cache server."""
    client = connect(config)
    data = CachedDataset(manifest, client, prefetch_threads=0)
    data.get_many(indices)
    data.close()
    return {"worker_node": ray.get_runtime_context().get_node_id(),
            "server_node": client.ping()["node_id"],
            "server": client.server._actor_id.hex(), "hits": data.counters["hits"]}


def job(placement: dict[str, list[int]], gone: str | None = None) -> dict:
    """One driver (a Ray job): a worker per named node, then every node's server stats
    (after the node ``gone`` is seen dead)."""
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        deadline = time.time() + 60
        while gone and time.time() < deadline and any(
                n["NodeID"] == gone and n["Alive"] for n in ray.nodes()):
            time.sleep(0.5)
        runs = ray.get([read.options(resources={node: 0.01}).remote(indices)
                        for node, indices in placement.items()])
        return {"job": ray.get_runtime_context().get_job_id(),
                "workers": dict(zip(placement, runs, strict=True)),
                "per_node": node_cache_stats(config)}
    finally:
        ray.shutdown()


cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 0, "gcs_server_port": port, "include_dashboard": False,
    "temp_dir": temp_dir})
try:
    nodes = {name: cluster.add_node(num_cpus=1, resources={name: 1})
             for name in ("node_a", "node_b")}
    cluster.wait_for_nodes()
    ids = {name: node.node_id for name, node in nodes.items()}
    first = job({"node_a": list(range(0, 50)), "node_b": list(range(50, 100))})
    second = job({"node_a": list(range(0, 50)), "node_b": list(range(50, 100))})
    cluster.remove_node(nodes["node_b"])  # node loss
    nodes["node_c"] = cluster.add_node(num_cpus=1, resources={"node_c": 1})
    cluster.wait_for_nodes()
    ids["node_c"] = nodes["node_c"].node_id
    third = job({"node_a": list(range(0, 50)), "node_c": list(range(50, 100))}, ids["node_b"])
    print(json.dumps({"ids": ids, "jobs": [first, second, third]}))
finally:
    cluster.shutdown()
