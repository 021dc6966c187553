"""Resilience benchmark: predictive checkpoints (forgeline.health) against a fixed interval
and Young/Daly, on injected faults in a real training loop, and at scale by simulation.

    python benchmarks/resilience.py [--quick] [--out benchmarks/results/resilience.json]

**Injected faults.** A real small training loop (forgeline's DecoderLM ``tiny`` preset,
seq 32, batch 8, torch AdamW, one CPU thread, byte tokens of the Python standard library's
source) runs in a forked worker process per episode; forgeline's ``CheckpointStore`` saves
real checkpoints (synchronous, shuffle-zstd, local disk) and ``FaultInjector`` makes the
worker fail: memory leak to the worker's memory limit, slow-down before a crash, NaN
gradients after growing spikes, a quota'd folder filling up, SIGKILL with no warning
(FAULT_KINDS, cycled; failure step and lead time drawn per fault, the same for every
policy). For each fault the three policies run back to back (A B C):
  fixed        a checkpoint every FIXED_EVERY steps
  young_daly   Young/Daly sqrt(2·C·MTBF) with C = the measured save cost and MTBF = the
               episodes' true mean time to failure (what a fleet's failure statistics give)
  predictive   forgeline's HealthGuard: psutil signals, the default hazard model, proactive
               saves at the hazard threshold, the adaptive interval (base = FIXED_EVERY,
               MTBF = that of the failures it did not predict so far, estimated online over
               the episodes before, starting at the all-failures MTBF)
Lost steps: failure step − last checkpointed step. Overhead: seconds training waited for
checkpoints plus the health monitor's own time (sampling + features + hazard), per step.
The SIGKILL-only scenario (a fleet whose failures all come unannounced): predictive
(its MTBF then is the all-failures one: nothing was predicted) against Young/Daly.
One worker per episode: two ranks per episode (gloo, a SIGKILLed peer) would double the
time on this 2-core machine; the job hazard over ranks is covered by the tests.

**hazard_auc**: ROC AUC of the predictive runs' per-step job hazard against "a failure within
horizon_steps" (all kinds; also without SIGKILL, which no signal announces).
**False alarms per hour of healthy training**: proactive saves (hazard ≥ threshold) in a
fault-free run plus the episodes' steps before their precursor, per hour of training time.

**Simulation at scale** (first-order expected values, no Monte Carlo): the Llama 3 paper
(Llama Team, "The Llama 3 Herd of Models", arXiv:2407.21783, §3.3.4): a 54-day snapshot of
pre-training on 16,384 H100 GPUs had 419 unexpected interruptions, ~78 % attributed to
confirmed or suspected hardware issues. Assumed (stated in the JSON): blocking checkpoint cost
C, restart cost R, fixed interval; only the hardware share is predictable (recall applies to
it); a false alarm costs one checkpoint. Waste rate per policy = C/τ + λ_u(τ/2 + R) +
λ_p(C + R) + λ_fa·C with λ_p = 0.78·recall·λ, λ_u = λ − λ_p, λ_fa = λ_p(1/precision − 1),
τ = fixed, sqrt(2C/λ) (Young/Daly) or min(fixed, sqrt(2C/λ_u)) (predictive); goodput = 1 −
waste. The curve over recall × precision: PNG beside the JSON, and in it.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

FIXED_EVERY = 25
SAMPLE_EVERY = 2  # the hazard every 2 steps: a ~5 ms step makes the monitor's ~1 ms visible
FAULT_KINDS = ("memory_leak", "slowdown", "nan_grad", "disk_fill", "sigkill")
LEAD = {"memory_leak": (25, 50), "slowdown": (15, 40), "nan_grad": (4, 10),
        "disk_fill": (25, 50), "sigkill": (0, 0)}
LEAK_BYTES = 384 * 2**20
DISK_BYTES = 24 * 2**20
FAILED = 3


def _tokens() -> np.ndarray:
    import email
    import inspect

    return np.frombuffer(inspect.getsource(email).encode() * 20, dtype=np.uint8).copy()


def _worker(episode: dict[str, Any], trace_path: str) -> None:
    """One episode in a forked process: train until the fault (or ``steps``)."""
    import torch

    from forgeline.checkpoint import CheckpointConfig, CheckpointStore
    from forgeline.health import FaultInjector, FaultSpec, HealthGuard, HealthOptions
    from forgeline.health.signals import DiskSource, MemorySource, ThreadSource
    from forgeline.train.config import ModelConfig
    from forgeline.train.model import DecoderLM, lm_loss

    torch.set_num_threads(1)
    torch.manual_seed(episode["seed"])
    model = DecoderLM(ModelConfig.preset("tiny", seq_len=32, vocab_size=256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.from_numpy(_tokens()).long()
    rng = np.random.default_rng(episode["seed"])
    work = Path(episode["work"])
    store = CheckpointStore("file://" + str(work / "ckpt"), CheckpointConfig(async_save=False))
    fill = work / "fill"
    fill.mkdir(parents=True, exist_ok=True)
    import psutil

    for _ in range(3):  # warm-up (not counted): autograd buffers and AdamW state allocated
        batch = torch.stack([data[s:s + 33] for s in rng.integers(0, len(data) - 33, 8)])
        lm_loss(model(batch[:, :-1]), batch[:, 1:]).backward()
        opt.step()
        opt.zero_grad()
    warm = CheckpointStore("file://" + str(work / "warm"), CheckpointConfig(async_save=False))
    for i in (1, 2):  # a store's first saves start its threads and buffers
        warm.save({"model": model.state_dict(), "optim": opt.state_dict()}, i)
    warm.close()
    rss0 = psutil.Process().memory_info().rss
    fault = episode.get("fault")
    injector = FaultInjector(FaultSpec(**fault, disk_path=str(fill), leak_bytes=LEAK_BYTES,
                                       disk_bytes=DISK_BYTES)) if fault else None
    guard = None
    if episode["policy"] == "predictive":
        options = HealthOptions(enabled=True, mtbf_s=episode["mtbf_s"],
                                sample_every_steps=SAMPLE_EVERY)
        sources = [MemorySource(rss0 + int(LEAK_BYTES * 1.05)), ThreadSource(),
                   DiskSource(str(fill), int(DISK_BYTES * 1.05))]
        guard = HealthGuard(options, FIXED_EVERY, sources=sources)
    every = episode["every"]
    fd = os.open(trace_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def line(record: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(record) + "\n").encode())

    last_save, step_s = 0, None
    try:
        for step in range(1, episode["steps"] + 1):
            started = time.perf_counter()
            if injector:
                injector.before_step(step, step_s)
            starts = rng.integers(0, len(data) - 33, 8)
            batch = torch.stack([data[s:s + 33] for s in starts])
            loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
            opt.zero_grad()
            loss.backward()
            if injector:
                injector.after_backward(step, model.parameters())
            grad = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
            opt.step()
            step_s = time.perf_counter() - started
            record: dict[str, Any] = {"step": step, "step_s": step_s}
            if guard is not None:
                t0 = time.perf_counter()
                decision = guard.step(step, step_s, 0.0, float(loss.detach()), grad)
                record.update(hazard=decision.job_hazard, monitor_s=time.perf_counter() - t0,
                              interval=decision.interval_steps)
                if episode.get("debug"):
                    record["features"] = {k: round(v, 3) for k, v in guard.features.items() if v}
                save, reason = decision.save, decision.reason
            else:
                save, reason = step - last_save >= every, "interval"
            if save:
                info = store.save({"model": model.state_dict(), "optim": opt.state_dict()},
                                  step)
                record.update(save=reason, save_s=info.blocked_s)
                last_save = step
                if guard is not None:
                    guard.saved(step, info.blocked_s)
            line(record)
            if injector:
                injector.after_step(step)
    except (MemoryError, OSError, RuntimeError) as exc:
        line({"failed": step, "error": f"{type(exc).__name__}: {exc}"[:200]})
        os._exit(FAILED)
    finally:
        if injector:
            injector.cleanup()
    os._exit(0)


def run_episode(episode: dict[str, Any]) -> dict[str, Any]:
    """Fork a worker for ``episode``; read its trace back (it survives a SIGKILL)."""
    work = Path(tempfile.mkdtemp(prefix="forgeline-resilience-"))
    episode = {**episode, "work": str(work)}
    trace = work / "trace.jsonl"
    proc = multiprocessing.get_context("fork").Process(target=_worker,
                                                       args=(episode, str(trace)))
    started = time.perf_counter()
    proc.start()
    proc.join()
    records = [json.loads(x) for x in trace.read_text().splitlines()] if trace.exists() else []
    shutil.rmtree(work, ignore_errors=True)
    steps = [r for r in records if "step" in r]
    last = steps[-1]["step"] if steps else 0
    failed = next((r["failed"] for r in records if "failed" in r), None)
    if proc.exitcode == -9:  # SIGKILL: the step that was running is lost
        failed = last + 1
    saves = [r["step"] for r in steps if "save" in r and r["step"] <= (failed or 10**9)]
    fail_step = failed or last
    last_good = max([s for s in saves if s < fail_step] or [0])
    return {
        "policy": episode["policy"], "fault": episode.get("fault"), "exitcode": proc.exitcode,
        "failed_step": failed, "steps_run": last, "lost_steps": fail_step - last_good,
        "saves": len(saves), "proactive_saves": sum(r.get("save") == "hazard" for r in steps),
        "save_s": sum(r.get("save_s", 0.0) for r in steps),
        "monitor_s": sum(r.get("monitor_s", 0.0) for r in steps),
        "train_s": sum(r["step_s"] for r in steps),
        "hazard": [r.get("hazard") for r in steps], "interval": [r.get("interval")
                                                                for r in steps][-1:],
        "error": next((r["error"] for r in records if "error" in r), None),
        "wall_s": time.perf_counter() - started,
    }


def faults(count: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kind = FAULT_KINDS[i % len(FAULT_KINDS)]
        lo, hi = LEAD[kind]
        out.append({"kind": kind, "at_step": int(rng.integers(70, 171)),
                    "lead_steps": int(rng.integers(lo, hi + 1)) if hi else 0})
    return out


def calibrate() -> dict[str, float]:
    """Median step time and save cost of the loop (a fault-free fixed-interval episode)."""
    from forgeline.health import FaultSpec  # noqa: F401  (imported before forking)

    run = run_episode({"policy": "fixed", "every": 10, "steps": 60, "seed": 99,
                       "mtbf_s": None})
    return {"step_s": run["train_s"] / max(1, run["steps_run"]),
            "save_s": run["save_s"] / max(1, run["saves"])}


def _predicted(run: dict[str, Any], horizon: int) -> bool:
    """Whether the hazard crossed the threshold within the horizon before the failure."""
    if run["failed_step"] is None:
        return False
    h = run["hazard"]
    start = max(0, run["failed_step"] - 1 - horizon)
    return any(x is not None and x >= 0.5 for x in h[start:run["failed_step"]])


def injected(args: Any) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, Any]]:
    from forgeline.health import HealthOptions
    from forgeline.ray.checkpointer import young_daly_interval_s

    n = 20 if args.quick else 40
    plan = faults(n, seed=1)
    cal = calibrate()
    mean_ttf_steps = float(np.mean([f["at_step"] for f in plan]))
    mtbf_s = mean_ttf_steps * cal["step_s"]
    yd_steps = max(1, round(young_daly_interval_s(cal["save_s"], mtbf_s) / cal["step_s"]))
    horizon = HealthOptions().horizon_steps
    runs, unpredicted = [], 0
    for i, fault in enumerate(plan):
        unpred_mtbf_s = mtbf_s * (i + 1) / (unpredicted + 1)  # Laplace: i failures seen
        for policy, every in (("fixed", FIXED_EVERY), ("young_daly", yd_steps),
                              ("predictive", FIXED_EVERY)):
            run = run_episode({"policy": policy, "every": every, "steps": 400, "seed": i,
                               "fault": fault, "mtbf_s": unpred_mtbf_s})
            run["scenario"] = "mixed"
            runs.append(run)
            print(f"{fault['kind']:12s} at {fault['at_step']:3d} lead {fault['lead_steps']:2d}"
                  f" {policy:11s} lost {run['lost_steps']:3d} saves {run['saves']:2d}"
                  f" ({run['proactive_saves']} proactive) exit {run['exitcode']}", flush=True)
        unpredicted += not _predicted(runs[-1], horizon)
    kills = [{"kind": "sigkill", "at_step": f["at_step"], "lead_steps": 0}
             for f in faults(6 if args.quick else 12, seed=2)]
    for i, fault in enumerate(kills):
        for policy, every in (("young_daly", yd_steps), ("predictive", FIXED_EVERY)):
            run = run_episode({"policy": policy, "every": every, "steps": 400, "seed": 100 + i,
                               "fault": fault, "mtbf_s": mtbf_s})
            run["scenario"] = "sigkill_only"
            runs.append(run)
    healthy_steps = 400 if args.quick else 2000
    healthy = run_episode({"policy": "predictive", "every": FIXED_EVERY,
                           "steps": healthy_steps, "seed": 7, "mtbf_s": mtbf_s})
    healthy["scenario"] = "healthy"
    runs.append(healthy)
    return _injected_metrics(runs, horizon), runs, {
        "calibration": cal, "mtbf_steps": mean_ttf_steps, "mtbf_s": mtbf_s,
        "fixed_every_steps": FIXED_EVERY, "young_daly_every_steps": yd_steps,
        "faults": len(plan), "sigkill_only_faults": len(kills), "workers_per_episode": 1,
        "horizon_steps": horizon}


def _injected_metrics(runs: list[dict[str, Any]], horizon: int) -> dict[str, float]:
    mixed = [r for r in runs if r["scenario"] == "mixed"]

    def total(policy: str, key: str, scenario: list[dict[str, Any]]) -> float:
        return float(sum(r[key] for r in scenario if r["policy"] == policy))

    def overhead(policy: str) -> float:
        sel = [r for r in mixed if r["policy"] == policy]
        return sum(r["save_s"] + r["monitor_s"] for r in sel) / sum(r["steps_run"] for r in sel)

    kills = [r for r in runs if r["scenario"] == "sigkill_only"]
    metrics = {
        "lost_steps_ratio_predictive_vs_fixed":
            total("predictive", "lost_steps", mixed) / total("fixed", "lost_steps", mixed),
        "overhead_ratio_predictive_vs_fixed": overhead("predictive") / overhead("fixed"),
        "saves_ratio_predictive_vs_fixed":
            total("predictive", "saves", mixed) / total("fixed", "saves", mixed),
        "save_overhead_ratio_predictive_vs_fixed":
            total("predictive", "save_s", mixed) / total("fixed", "save_s", mixed),
        "monitor_ms_per_step": 1000 * total("predictive", "monitor_s", mixed)
            / total("predictive", "steps_run", mixed),
        "step_ms": 1000 * total("fixed", "train_s", mixed) / total("fixed", "steps_run", mixed),
        "lost_steps_ratio_young_daly_vs_fixed":
            total("young_daly", "lost_steps", mixed) / total("fixed", "lost_steps", mixed),
        "overhead_ratio_young_daly_vs_fixed": overhead("young_daly") / overhead("fixed"),
        "sigkill_lost_steps_ratio_predictive_vs_young_daly":
            total("predictive", "lost_steps", kills) / total("young_daly", "lost_steps", kills),
    }
    for kind in FAULT_KINDS:
        sel = [r for r in mixed if r["fault"]["kind"] == kind]
        for policy in ("fixed", "young_daly", "predictive"):
            metrics[f"mean_lost_steps@{kind}@{policy}"] = float(np.mean(
                [r["lost_steps"] for r in sel if r["policy"] == policy]))
    scores, labels, no_kill_scores, no_kill_labels = [], [], [], []
    for r in (x for x in runs if x["policy"] == "predictive" and x["failed_step"]):
        for i, h in enumerate(r["hazard"]):
            if h is None:
                continue
            label = r["failed_step"] - (i + 1) <= horizon
            scores.append(h)
            labels.append(label)
            if r["fault"]["kind"] != "sigkill":
                no_kill_scores.append(h)
                no_kill_labels.append(label)
    from forgeline.health import roc_auc

    metrics["hazard_auc"] = roc_auc(np.array(scores), np.array(labels))
    metrics["hazard_auc_without_sigkill"] = roc_auc(np.array(no_kill_scores),
                                                    np.array(no_kill_labels))
    alarms, healthy_s, healthy_steps = 0, 0.0, 0
    for r in (x for x in runs if x["policy"] == "predictive"):
        fault = r["fault"]
        end = r["steps_run"] if not fault else max(
            0, fault["at_step"] - fault["lead_steps"] - horizon)
        step_s = r["train_s"] / max(1, r["steps_run"])
        healthy_s += end * step_s
        healthy_steps += end
        hazard = r["hazard"][:end]
        alarms += sum(1 for a, b in zip([0.0, *hazard], hazard, strict=False)
                      if b is not None and b >= 0.5 and (a or 0.0) < 0.5)
    metrics["false_alarms_per_hour_healthy"] = alarms / (healthy_s / 3600.0)
    metrics["false_alarms_per_1000_healthy_steps"] = 1000 * alarms / max(1, healthy_steps)
    metrics["false_alarms_healthy"] = alarms
    metrics["healthy_training_hours"] = healthy_s / 3600.0
    return metrics


LLAMA3 = {"source": "Llama Team, AI @ Meta, 'The Llama 3 Herd of Models', arXiv:2407.21783 "
          "(2024), §3.3.4 and Table 5", "gpus": 16384, "days": 54,
          "unexpected_interruptions": 419, "hardware_share": 0.78}
ASSUMED = {"checkpoint_cost_s": 60.0, "restart_cost_s": 600.0, "fixed_interval_s": 3600.0}


def waste_rate(policy: str, lam: float, recall: float = 0.0, precision: float = 1.0, *,
               c: float = ASSUMED["checkpoint_cost_s"], r: float = ASSUMED["restart_cost_s"],
               fixed: float = ASSUMED["fixed_interval_s"]) -> float:
    """Fraction of time lost (first order) under ``policy``."""
    lam_p = LLAMA3["hardware_share"] * recall * lam if policy == "predictive" else 0.0
    lam_u = lam - lam_p
    tau = {"fixed": fixed, "young_daly": math.sqrt(2 * c / lam)}.get(
        policy, min(fixed, math.sqrt(2 * c / lam_u)) if lam_u > 0 else fixed)
    false = lam_p * (1.0 / precision - 1.0) if precision > 0 else math.inf
    return c / tau + lam_u * (tau / 2 + r) + lam_p * (c + r) + false * c


def simulate(out_png: Path) -> tuple[dict[str, float], dict[str, Any]]:
    lam = LLAMA3["unexpected_interruptions"] / (LLAMA3["days"] * 86400.0)
    recalls = [round(x, 2) for x in np.linspace(0, 1, 11)]
    precisions = [0.1, 0.25, 0.5, 0.9]
    curve = {f"precision={p}": [1 - waste_rate("predictive", lam, rc, p) for rc in recalls]
             for p in precisions}
    fixed, yd = 1 - waste_rate("fixed", lam), 1 - waste_rate("young_daly", lam)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in curve.items():
        ax.plot(recalls, ys, marker="o", ms=3, label=f"predictive, {name}")
    ax.axhline(fixed, color="gray", ls="--", label="fixed 1 h")
    ax.axhline(yd, color="black", ls=":", label="Young/Daly")
    ax.set_xlabel("recall of hardware failures")
    ax.set_ylabel("expected goodput")
    ax.set_title("16,384 GPUs, 54 days, 419 interruptions (Llama 3)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    metrics = {"sim_goodput_fixed": fixed, "sim_goodput_young_daly": yd,
               "sim_goodput_predictive@recall0.5_precision0.5":
                   1 - waste_rate("predictive", lam, 0.5, 0.5),
               "sim_goodput_predictive@recall0.8_precision0.9":
                   1 - waste_rate("predictive", lam, 0.8, 0.9)}
    return metrics, {"published": LLAMA3, "assumed": ASSUMED, "mtbf_s": 1 / lam,
                     "recalls": recalls, "goodput": curve, "png": str(out_png),
                     "young_daly_interval_s": math.sqrt(2 * ASSUMED["checkpoint_cost_s"] / lam)}


def main() -> None:
    args = harness.parser("resilience", __doc__).parse_args()
    rec = harness.Recorder("resilience", args, "torch", "psutil", "numpy")
    import torch  # noqa: F401  (imported once, before the workers fork)

    import forgeline.health.guard  # noqa: F401
    from forgeline.health import default_hazard_model

    default_hazard_model()  # fitted once in the parent; the forked workers inherit it
    metrics, runs, setup = injected(args)
    png = Path(args.out).with_suffix(".png")
    sim_metrics, simulation = simulate(png)
    metrics.update(sim_metrics)
    for r in runs:
        r["hazard"] = [None if h is None else round(h, 4) for h in r["hazard"]]
    targets = {"lost_steps_ratio_predictive_vs_fixed": "≤ 0.5",
               "overhead_ratio_predictive_vs_fixed": "≤ 1.1",
               "sigkill_lost_steps_ratio_predictive_vs_young_daly": "≤ 1.0"}
    rec.write(metrics, runs, setup=setup, simulation=simulation, targets=targets)


if __name__ == "__main__":
    main()
