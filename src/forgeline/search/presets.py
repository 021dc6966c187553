"""Cluster presets as data: one node of each GPU system, its rates and where they come from.

No imports beyond the standard library, so the preset names can type a form field
(:data:`PresetName`) without loading the cost model. :meth:`ClusterSpec.preset` builds and
validates a spec from these fields.

Sources (per device unless stated; bandwidths one direction):
* V100-32GB: NVIDIA V100 datasheet (SXM, 125 TFLOP/s fp16 tensor, 15.7 fp32, 900 GB/s HBM2)
  in a DGX-2 (16 GPUs on NVSwitch, 300 GB/s NVLink bidirectional, 8 x 100 Gb/s InfiniBand
  for 16 GPUs, 1.5 TB host memory, 30 TB NVMe); no bf16.
* A100-40GB / 80GB: NVIDIA A100 datasheet (312 TFLOP/s bf16/fp16 dense, 1,555 / 2,039 GB/s)
  in a DGX A100 (NVLink 600 GB/s bidirectional, one 200 Gb/s HDR NIC per GPU, 1 / 2 TB host
  memory, 15 TB NVMe).
* H100 / H200: NVIDIA H100 and H200 SXM datasheets (989.4 TFLOP/s bf16 dense, 1,978.9 fp8;
  3.35 / 4.8 TB/s) in a DGX H100/H200 (NVLink 900 GB/s bidirectional, one 400 Gb/s NIC per
  GPU, 2 TB host memory, 30 TB NVMe). H200: 141 GB on the datasheet, about 140 GiB usable.
* B200: NVIDIA HGX B200 datasheet (2.25 PFLOP/s bf16 dense, 4.5 fp8 dense, 75 TFLOP/s fp32,
  180 GB, 7.7 TB/s) in a DGX B200 (NVLink 5 1.8 TB/s bidirectional, one 400 Gb/s NIC per
  GPU, 2 TB host memory, 30 TB NVMe).
Assumed, not from a datasheet: PCIe rates (the usable part of Gen3/4/5 x16), host memory
bandwidth (the sockets' DDR channels), NVMe bandwidth (about 3 GB/s per drive, all drives
striped), 2 GiB per device reserved for the runtime. Achieved-fraction curves are those of
Calculon's published A100/H100 system files (Isaev et al., SC'23): matmul 0.6 at 1 GFLOP,
0.9 at 16, 0.95 at 128 GFLOP; memory 0.6 at 1 MB, 0.75 at 10 MB, 0.9 at 100 MB. NCCL link
fractions 0.75 of NVLink (nccl-tests bus bandwidth on DGX A100) and 0.9 of InfiniBand.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

GIB = 1024**3
TIB = 1024**4

PresetName = Literal["v100-32gb", "a100-40gb", "a100-80gb", "h100", "h200", "b200"]
"""Names :meth:`ClusterSpec.preset` accepts."""

PRESET_NAMES: tuple[str, ...] = get_args(PresetName)

GPU_MATMUL_EFFICIENCY = [(1e7, 0.1), (1e9, 0.6), (1.6e10, 0.9), (1.28e11, 0.95)]
GPU_MEMORY_EFFICIENCY = [(1e4, 0.3), (1e6, 0.6), (1e7, 0.75), (1e8, 0.9)]

# Fused attention kernels, achieved fraction of the 16-bit peak (forward + backward):
# FlashAttention-2 (Dao 2023) reaches 50-73 % of A100 peak forward, backward lower: 0.55;
# FlashAttention-3 (Shah et al. 2024) reports FlashAttention-2 at 35 % of H100 peak and
# itself up to 75 % (forward, fp16): 0.35 and 0.6 (backward lower). Blackwell: the Hopper
# fractions (assumed).
_AMPERE_ATTENTION = {"flash2": 0.55}
# Best achievable matmul fraction of peak (MAMF / datasheet), stas00/ml-engineering
# compute/accelerator/README.md "Maximum Achievable Matmul FLOPS comparison table":
# bf16 A100 SXM 271.2/312, H100 SXM 794.5/989 ("H200 is the same"), B200 1745/2250; fp8
# H100 1402.6/1979, H200 1453.4/1979, B200 3432.5/4500. fp16 is taken as bf16.
_A100_MAMF = {"bf16": 0.869, "fp16": 0.869}
_H100_MAMF = {"bf16": 0.803, "fp16": 0.803, "fp8": 0.709}
_H200_MAMF = {"bf16": 0.803, "fp16": 0.803, "fp8": 0.734}
_B200_MAMF = {"bf16": 0.776, "fp16": 0.776, "fp8": 0.763}
_HOPPER_ATTENTION = {"flash2": 0.35, "flash3": 0.6}

_A100_PEAKS = {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12}
_HOPPER_PEAKS = {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12,
                 "fp8": 1978.9e12}

PRESETS: dict[str, dict[str, Any]] = {
    "v100-32gb": dict(
        devices_per_node=16, device_memory_bytes=32 * GIB, hbm_bytes_per_s=900e9,
        peak_flops_per_s={"fp32": 15.7e12, "fp16": 125e12},
        intra_node_bytes_per_s=150e9, inter_node_bytes_per_s=6.25e9,
        host_memory_bytes=1536 * GIB, host_memory_bytes_per_s=256e9,
        host_link_bytes_per_s=12e9, nvme_bytes_per_s=25e9, nvme_bytes=30 * 10**12,
        notes="NVIDIA V100 datasheet; DGX-2 node (16 GPUs, NVSwitch, 8 x 100 Gb/s IB)",
    ),
    "a100-40gb": dict(
        device_memory_bytes=40 * GIB, hbm_bytes_per_s=1555e9, peak_flops_per_s=_A100_PEAKS,
        intra_node_bytes_per_s=300e9, inter_node_bytes_per_s=25e9,
        host_memory_bytes=1 * TIB, host_memory_bytes_per_s=409.6e9, host_link_bytes_per_s=25e9,
        nvme_bytes_per_s=25e9, nvme_bytes=15 * 10**12, attention_efficiency=_AMPERE_ATTENTION,
        matmul_peak_fraction=_A100_MAMF,
        notes="NVIDIA A100 datasheet; DGX A100 node (NVLink 3, 200 Gb/s HDR per GPU)",
    ),
    "a100-80gb": dict(
        device_memory_bytes=80 * GIB, hbm_bytes_per_s=2039e9, peak_flops_per_s=_A100_PEAKS,
        intra_node_bytes_per_s=300e9, inter_node_bytes_per_s=25e9,
        host_memory_bytes=2 * TIB, host_memory_bytes_per_s=409.6e9, host_link_bytes_per_s=25e9,
        nvme_bytes_per_s=25e9, nvme_bytes=15 * 10**12, attention_efficiency=_AMPERE_ATTENTION,
        matmul_peak_fraction=_A100_MAMF,
        notes="NVIDIA A100 datasheet; DGX A100 node (NVLink 3, 200 Gb/s HDR per GPU)",
    ),
    "h100": dict(
        device_memory_bytes=80 * GIB, hbm_bytes_per_s=3350e9, peak_flops_per_s=_HOPPER_PEAKS,
        intra_node_bytes_per_s=450e9, inter_node_bytes_per_s=50e9,
        host_memory_bytes=2 * TIB, host_memory_bytes_per_s=614e9, host_link_bytes_per_s=50e9,
        nvme_bytes_per_s=50e9, nvme_bytes=30 * 10**12, attention_efficiency=_HOPPER_ATTENTION,
        matmul_peak_fraction=_H100_MAMF,
        notes="NVIDIA H100 SXM datasheet; DGX H100 node (NVLink 4, 400 Gb/s NDR per GPU)",
    ),
    "h200": dict(
        device_memory_bytes=140 * GIB, hbm_bytes_per_s=4800e9, peak_flops_per_s=_HOPPER_PEAKS,
        intra_node_bytes_per_s=450e9, inter_node_bytes_per_s=50e9,
        host_memory_bytes=2 * TIB, host_memory_bytes_per_s=614e9, host_link_bytes_per_s=50e9,
        nvme_bytes_per_s=50e9, nvme_bytes=30 * 10**12, attention_efficiency=_HOPPER_ATTENTION,
        matmul_peak_fraction=_H200_MAMF,
        notes="NVIDIA H200 SXM datasheet; DGX H200 node (NVLink 4, 400 Gb/s NDR per GPU)",
    ),
    "b200": dict(
        device_memory_bytes=167 * GIB, hbm_bytes_per_s=7.7e12,
        peak_flops_per_s={"fp32": 75e12, "tf32": 1.1e15, "bf16": 2.25e15, "fp16": 2.25e15,
                          "fp8": 4.5e15},
        intra_node_bytes_per_s=900e9, inter_node_bytes_per_s=50e9,
        host_memory_bytes=2 * TIB, host_memory_bytes_per_s=614e9, host_link_bytes_per_s=50e9,
        nvme_bytes_per_s=50e9, nvme_bytes=30 * 10**12, attention_efficiency=_HOPPER_ATTENTION,
        matmul_peak_fraction=_B200_MAMF,
        notes="NVIDIA HGX B200 datasheet (180 GB = 167 GiB); DGX B200 node (NVLink 5, "
              "400 Gb/s per GPU)",
    ),
}


def preset_fields(name: str, nodes: int = 1) -> dict[str, Any]:
    """The :class:`ClusterSpec` fields of preset ``name`` with ``nodes`` nodes.

    Raises ``KeyError`` for an unknown name (the caller names the field)."""
    key = name.lower().replace("_", "-")
    data = PRESETS[key]
    per_node = data.get("devices_per_node", 8)
    return {
        "name": f"{key}x{nodes * per_node}", "nodes": nodes, "devices_per_node": per_node,
        "reserved_bytes_per_device": 2 * GIB,
        "matmul_efficiency": GPU_MATMUL_EFFICIENCY, "memory_efficiency": GPU_MEMORY_EFFICIENCY,
        **{k: v for k, v in data.items() if k != "notes"},
        "notes": f"{data['notes']}; Calculon SC'23 efficiency curves",
    }
