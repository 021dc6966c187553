"""Communication time of the collectives each parallelism uses (alpha-beta model).

Ring all-reduce over n ranks moves ``2(n-1)/n`` of the buffer through each rank's link;
reduce-scatter and all-gather move ``(n-1)/n``. A group that spans nodes runs
hierarchically: the intra-node part over NVLink among the k members that share a node,
the inter-node part over each member's own NIC on ``1/k`` of the buffer. Ranks are laid
out tensor-parallel innermost, then data-parallel, then pipeline (Megatron's order), so a
group's ``stride`` is the product of the sizes inside it. Arrays welcome.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forgeline.search.specs import ClusterSpec

COLLECTIVE_FACTOR = {"all_reduce": 2.0, "reduce_scatter": 1.0, "all_gather": 1.0}


def ring_all_reduce_s(size_bytes: Any, n: Any, bytes_per_s: float, latency_s: float = 0.0) -> Any:
    """Ring all-reduce on one link type: ``2(n-1)/n * S / B + 2(n-1) alpha``."""
    n = np.asarray(n, dtype=float)
    return np.where(n > 1, 2 * (n - 1) / n * size_bytes / bytes_per_s + 2 * (n - 1) * latency_s,
                    0.0)


def members_per_node(n: Any, stride: Any, devices_per_node: int) -> Any:
    """How many of a group's n members share a node when consecutive members are
    ``stride`` ranks apart."""
    n, stride = np.asarray(n), np.asarray(stride)
    k = np.maximum(devices_per_node // np.maximum(stride, 1), 1)
    return np.minimum(k, n)


def collective_s(kind: str, size_bytes: Any, n: Any, stride: Any, cluster: ClusterSpec) -> Any:
    """Time of ``kind`` (all_reduce / reduce_scatter / all_gather) of ``size_bytes`` per rank
    over a group of ``n`` ranks at ``stride``: intra-node among k, then inter-node on S/k."""
    factor = COLLECTIVE_FACTOR[kind]
    n = np.asarray(n, dtype=float)
    k = members_per_node(n, stride, cluster.devices_per_node).astype(float)
    nodes = np.ceil(n / k)
    bi = cluster.intra_node_bytes_per_s * cluster.intra_node_efficiency
    be = cluster.inter_node_bytes_per_s * cluster.inter_node_efficiency
    intra = factor * ((k - 1) / k * size_bytes / bi + (k - 1) * cluster.intra_node_latency_s)
    inter = factor * ((nodes - 1) / nodes * size_bytes / (k * be)
                      + (nodes - 1) * cluster.inter_node_latency_s)
    return np.where(n > 1, intra + inter, 0.0)


def p2p_s(size_bytes: Any, stride: Any, cluster: ClusterSpec) -> Any:
    """One point-to-point send between ranks ``stride`` apart (pipeline neighbours)."""
    inside = np.asarray(stride) < cluster.devices_per_node
    bw = np.where(inside, cluster.intra_node_bytes_per_s * cluster.intra_node_efficiency,
                  cluster.inter_node_bytes_per_s * cluster.inter_node_efficiency)
    lat = np.where(inside, cluster.intra_node_latency_s, cluster.inter_node_latency_s)
    return lat + size_bytes / bw


def host_transfer_s(size_bytes: Any, cluster: ClusterSpec, nvme: Any = False) -> Any:
    """Moving one device's bytes to or from host memory (PCIe, or NVMe when ``nvme``).

    All devices of a node move at once, so each gets ``1/devices_per_node`` of the
    node's host-memory or NVMe bandwidth when that is lower than its own link.
    """
    per_device_host = min(cluster.host_link_bytes_per_s,
                          cluster.host_memory_bytes_per_s / cluster.devices_per_node)
    per_device_nvme = (cluster.nvme_bytes_per_s / cluster.devices_per_node
                       if cluster.nvme_bytes_per_s > 0 else np.inf)
    pcie = size_bytes / per_device_host
    return np.where(nvme, np.maximum(pcie, size_bytes / per_device_nvme), pcie)


def exposed_s(comm_s: Any, overlap_window_s: Any) -> Any:
    """What overlap leaves on the critical path: ``max(0, comm - window)``."""
    return np.maximum(comm_s - overlap_window_s, 0.0)


def overlapped_s(comm_s: Any, window_s: Any, chunks: Any) -> Any:
    """Exposed time of communication split into ``chunks`` that overlap ``window_s`` of
    compute: ``max(comm - window, comm / chunks)`` (the last chunk can only start once the
    compute that produces it is done, so it never hides); all of it with no window."""
    comm_s, window_s = np.asarray(comm_s, dtype=float), np.asarray(window_s, dtype=float)
    hidden = np.maximum(comm_s - window_s, comm_s / np.maximum(chunks, 1.0))
    return np.where(window_s > 0, hidden, comm_s)
