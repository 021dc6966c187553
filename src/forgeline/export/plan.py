"""Search plan → ``ds_config.json`` + ``launch.sh``: the chosen plan for a user's own
DeepSpeed script, outside forgeline.

``ds_config.json`` is the plan's DeepSpeed config as the train stage runs it (global batch =
workers × micro-batch × accumulation, so launch it on the plan's worker count).
``launch.sh`` starts a script with the ``deepspeed`` launcher on that many processes; what
the config cannot say (activation recompute is a model setting) is a comment in it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from forgeline import storage

DS_CONFIG_FILE = "ds_config.json"
LAUNCH_FILE = "launch.sh"


@dataclass(frozen=True)
class PlanExport:
    ds_config_url: str
    launch_url: str


def launch_script(plan: dict[str, Any], ds_config_name: str = DS_CONFIG_FILE) -> str:
    """The launch command file for a search result (``StrategyResult`` as a dict)."""
    workers = int(plan["num_workers"])
    recompute = "on" if plan.get("activation_checkpointing") else "off"
    predicted = plan.get("predicted_step_s")
    lines = [
        "#!/bin/sh",
        f"# forgeline plan: {workers} data-parallel workers, ZeRO-{plan['zero_stage']}, "
        f"micro-batch {plan['micro_batch_size']} x accumulation {plan['grad_accum_steps']}, "
        f"activation recompute {recompute} (set it in your model)",
    ]
    if isinstance(predicted, int | float):
        lines.append(f"# predicted step time {predicted:.4g} s on {plan.get('cluster', '?')}")
    lines += [
        "# usage: TRAIN_SCRIPT=your_train.py sh launch.sh [script args]; the script calls",
        "# deepspeed.initialize(args=args, ...) and reads --deepspeed_config",
        'cd "$(dirname "$0")"',
        f'exec deepspeed --num_gpus {workers} "${{TRAIN_SCRIPT:-train.py}}" --deepspeed '
        f"--deepspeed_config {shlex.quote(ds_config_name)} \"$@\"",
        "",
    ]
    return "\n".join(lines)


def export_plan(plan: dict[str, Any], out_url: str) -> PlanExport:
    """Write ``ds_config.json`` and ``launch.sh`` for ``plan`` under ``out_url`` (atomically)."""
    ds_config_url = storage.join(out_url, DS_CONFIG_FILE)
    launch_url = storage.join(out_url, LAUNCH_FILE)
    storage.write_json_atomic(ds_config_url, plan["deepspeed_config"])
    storage.write_bytes_atomic(launch_url, launch_script(plan).encode())
    return PlanExport(ds_config_url, launch_url)
