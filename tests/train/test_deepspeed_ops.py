"""Training processes skip DeepSpeed's shared-memory inference all-reduce: its backend
starts without building the extension, and a ZeRO-2 training step still runs (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import torch, torch.distributed as dist
from forgeline.train import DecoderLM, ModelConfig, default_deepspeed_config, lm_loss
from forgeline.train import skip_unused_deepspeed_ops
skip_unused_deepspeed_ops()
import deepspeed
dist.init_process_group("gloo", rank=0, world_size=1)
model = DecoderLM(ModelConfig(n_layers=1, d_model=32, n_heads=2, seq_len=16))
ds = default_deepspeed_config(zero_stage=2, micro_batch_size=2, warmup_steps=1, total_steps=2)
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                  config=ds, dist_init_required=False)
tokens = torch.randint(0, 256, (2, 17))
engine.backward(lm_loss(engine(tokens[:, :-1]), tokens[:, 1:]))
engine.step()
from deepspeed.comm import comm
print("shm op:", comm.cdb.shm_comm_op, "step:", engine.global_steps)
"""


def test_deepspeed_starts_without_building_the_shm_inference_op(tmp_path):
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "DS_ACCELERATOR": "cpu",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0", "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "shm op: None step: 1" in done.stdout
    built = list((tmp_path / "ext").rglob("*")) if (tmp_path / "ext").exists() else []
    assert not built, built
