"""Training checkpoint → standard formats: a plain fp32 state dict (safetensors) and a
torch Distributed Checkpoint (DCP) folder.

Both hold the model's consolidated fp32 weights at one committed step (ZeRO-1/2 master
partitions of every rank joined, as ``forgeline.checkpoint.consolidated_fp32`` reads them),
keyed like ``DecoderLM.state_dict()``. The DCP folder loads with
``torch.distributed.checkpoint.load`` into a model's state dict, on any number of ranks, or
converts with ``format_utils.dcp_to_torch_save``. The optimizer state stays in forgeline's
store (its ZeRO partitions are not exported).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from forgeline import storage
from forgeline.checkpoint import CheckpointReader, consolidated_fp32

STATE_DICT_FILE = "model_fp32.safetensors"
DCP_DIR = "dcp"
_DCP_METADATA = ".metadata"


@dataclass(frozen=True)
class CheckpointExport:
    """Where one checkpoint step was exported."""

    step: int
    state_dict_url: str
    dcp_url: str
    tensors: int


def write_dcp(state: dict[str, torch.Tensor], out_url: str) -> str:
    """Save ``state`` as a single-process DCP checkpoint under ``out_url``.

    DCP writes to a local folder first; its files are then published one by one with atomic
    writes, the ``.metadata`` file (what ``dcp.load`` opens first) last, so a reader never
    sees a checkpoint with missing data files on any fsspec backend.
    """
    import torch.distributed.checkpoint as dcp

    with tempfile.TemporaryDirectory(prefix="forgeline-dcp-") as folder:
        with warnings.catch_warnings():  # torch warns "assuming … a single process" even
            warnings.filterwarnings("ignore", "torch.distributed is disabled")  # for no_dist
            dcp.save(state, storage_writer=dcp.FileSystemWriter(folder), no_dist=True)
        files = sorted(Path(folder).rglob("*"), key=lambda p: p.name == _DCP_METADATA)
        for file in files:
            if file.is_file():
                rel = file.relative_to(folder).as_posix()
                storage.write_bytes_atomic(storage.join(out_url, rel), file.read_bytes())
    return out_url


def export_checkpoint(store_url: str, out_url: str, step: int | None = None) -> CheckpointExport:
    """Export committed ``step`` (default: the newest) of the store at ``store_url``."""
    from safetensors.torch import save

    reader = CheckpointReader(store_url)
    step = reader.manifest(step, 0).step
    state = consolidated_fp32(reader, step)
    state_dict_url = storage.join(out_url, STATE_DICT_FILE)
    storage.write_bytes_atomic(state_dict_url, save(state, metadata={"step": str(step)}))
    dcp_url = write_dcp(state, storage.join(out_url, DCP_DIR))
    return CheckpointExport(step, state_dict_url, dcp_url, len(state))
