"""Collective and transfer times against hand-computed alpha-beta values."""

from __future__ import annotations

import numpy as np
import pytest

from forgeline.search import ClusterSpec
from forgeline.search.comm import (
    collective_s,
    exposed_s,
    host_transfer_s,
    members_per_node,
    p2p_s,
    ring_all_reduce_s,
)

# a100-80gb preset: NVLink 300 GB/s x 0.75 = 225 GB/s, 2 us; IB 25 GB/s x 0.9 = 22.5 GB/s, 5 us
A100 = ClusterSpec.preset("a100-80gb", nodes=4)
GB = 1e9


def test_ring_all_reduce_by_hand():
    # 2 (n-1)/n S / B + 2 (n-1) alpha = 2*7/8*1e9/1e11 + 14e-5
    assert float(ring_all_reduce_s(GB, 8, 1e11, 1e-5)) == pytest.approx(0.0175 + 14e-5)
    assert float(ring_all_reduce_s(GB, 1, 1e11, 1e-5)) == 0.0


def test_members_per_node():
    assert list(members_per_node(np.array([8, 4, 32, 4]), np.array([1, 8, 1, 2]), 8)) == [
        8, 1, 8, 4]


def test_all_reduce_inside_a_node():
    # 8 ranks at stride 1 share one node: 2*(7/8*1e9/225e9 + 7*2e-6)
    assert float(collective_s("all_reduce", GB, 8, 1, A100)) == pytest.approx(0.0078057778)


def test_hierarchical_all_reduce_across_nodes():
    # 32 ranks at stride 1: k = 8 per node, 4 nodes.
    # intra 2*(7/8*1e9/225e9 + 7*2e-6) = 0.0078058; inter 2*(3/4*1e9/(8*22.5e9) + 3*5e-6)
    # = 0.0083633
    assert float(collective_s("all_reduce", GB, 32, 1, A100)) == pytest.approx(
        0.0078057778 + 0.0083633333)


def test_data_parallel_group_behind_tensor_parallel():
    # t = 8 fills each node, so 4 DP ranks sit on 4 nodes: 2*(3/4*1e9/22.5e9 + 3*5e-6)
    assert float(collective_s("all_reduce", GB, 4, 8, A100)) == pytest.approx(0.0666966667)
    rs = collective_s("reduce_scatter", GB, 4, 8, A100)
    ag = collective_s("all_gather", GB, 4, 8, A100)
    assert float(rs) == float(ag) == pytest.approx(0.0666966667 / 2)


def test_point_to_point_and_host_transfers():
    assert float(p2p_s(1e8, 8, A100)) == pytest.approx(5e-6 + 1e8 / 22.5e9)
    assert float(p2p_s(1e8, 4, A100)) == pytest.approx(2e-6 + 1e8 / 225e9)
    # PCIe 25 GB/s (host memory 409.6 GB/s / 8 devices = 51.2 is not the limit)
    assert float(host_transfer_s(GB, A100)) == pytest.approx(0.04)
    # NVMe 25 GB/s per node shared by 8 devices = 3.125 GB/s each
    assert float(host_transfer_s(GB, A100, nvme=True)) == pytest.approx(0.32)


def test_overlap_leaves_only_the_excess():
    assert list(exposed_s(np.array([1.0, 3.0]), 2.0)) == [0.0, 1.0]


def test_bucketed_overlap_leaves_the_last_chunk_exposed():
    from forgeline.search.comm import overlapped_s

    # 10 s in 4 chunks behind 8 s of compute: max(10 - 8, 10 / 4) = 2.5
    assert float(overlapped_s(10.0, 8.0, 4)) == pytest.approx(2.5)
    assert float(overlapped_s(10.0, 20.0, 5)) == pytest.approx(2.0)  # plenty of compute
    assert float(overlapped_s(10.0, 0.0, 5)) == pytest.approx(10.0)  # nothing to hide behind
    assert float(overlapped_s(10.0, 4.0, 2)) == pytest.approx(6.0)  # the link is the limit
