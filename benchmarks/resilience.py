"""Resilience benchmark: predictive checkpoints (forgeline.health) against a fixed interval
and Young/Daly, on injected faults in a real training loop, and at scale by simulation.

    python benchmarks/resilience.py [--quick] [--calm-interval base|young_daly]
                                    [--out benchmarks/results/resilience.json]

**Injected faults.** A real small training loop (forgeline's DecoderLM ``tiny`` preset,
seq 32, batch 8, torch AdamW, one CPU thread, byte tokens of the Python standard library's
source) runs data-parallel on WORLD (2) forked ranks per episode, gradients averaged over a
gloo all-reduce; each rank's forgeline ``CheckpointStore`` saves real checkpoints
(synchronous, shuffle-zstd, local disk) and ``FaultInjector`` makes rank FAULT_RANK fail
(the other one sees its peer vanish in the next collective): memory leak to the worker's
memory limit, slow-down before a crash, NaN gradients after growing spikes, a quota'd
folder filling up, SIGKILL with no warning
(FAULT_KINDS, cycled; failure step and lead time drawn per fault, the same for every
policy). For each fault the three policies run back to back (A B C):
  fixed        a checkpoint every FIXED_EVERY steps
  young_daly   Young/Daly sqrt(2·C·MTBF) with C = the measured save cost and MTBF = the
               episodes' true mean time to failure (what a fleet's failure statistics give)
  predictive   forgeline's HealthGuard on every rank (hazards, step times and forecasts
               exchanged over gloo each evaluation): psutil signals, the default hazard
               model, proactive saves at the hazard threshold or just before a forecast
               exhaustion, the adaptive interval (base = FIXED_EVERY,
               MTBF = that of the failures it did not predict so far, estimated online over
               the episodes before, starting at the all-failures MTBF; the longest interval
               is the base, or with --calm-interval young_daly, young_daly's)
Lost steps: failure step − the newest step every rank checkpointed before it. Overhead:
seconds training waited for checkpoints plus the health monitor's own time (sampling +
features + hazard + the exchange), per step, the ranks' mean.
The SIGKILL-only scenario (a fleet whose failures all come unannounced): predictive
(its MTBF then is the all-failures one: nothing was predicted) against Young/Daly.

**hazard_auc**: ROC AUC of the predictive runs' per-step job hazard against "a failure within
horizon_steps" (all kinds; also without SIGKILL, which no signal announces).
**False alarms per hour of healthy training**: proactive saves (hazard or imminent) in a
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

from forgeline.health.policy import PROACTIVE_REASONS  # noqa: E402

FIXED_EVERY = 25
# the hazard every 4 steps (~45 ms): each evaluation exchanges the ranks' numbers over gloo,
# ~1 ms on this 2-core machine with both ranks busy, a visible share of a ~11 ms step
SAMPLE_EVERY = 4
FAULT_KINDS = ("memory_leak", "slowdown", "nan_grad", "disk_fill", "sigkill")
LEAD = {"memory_leak": (25, 50), "slowdown": (15, 40), "nan_grad": (4, 10),
        "disk_fill": (25, 50), "sigkill": (0, 0)}
LEAK_BYTES = 384 * 2**20
DISK_BYTES = 24 * 2**20
FAILED = 3
PEER_FAILED = 4  # a healthy rank whose collective failed with its peer
WORLD = 2
FAULT_RANK = 1  # the rank a fault is injected into; the other stays healthy
PEER_TIMEOUT_S = 20  # gloo's timeout: a dead peer is normally seen at once (socket closed)


def _tokens() -> np.ndarray:
    import email
    import inspect

    return np.frombuffer(inspect.getsource(email).encode() * 20, dtype=np.uint8).copy()


def _worker(episode: dict[str, Any], rank: int, trace_path: str) -> None:
    """Rank ``rank`` of an episode in a forked process: data-parallel training over gloo
    (gradients averaged by all-reduce) until the fault (on rank FAULT_RANK) or ``steps``."""
    import datetime

    import torch
    import torch.distributed as dist

    from forgeline.checkpoint import CheckpointConfig, CheckpointStore
    from forgeline.health import FaultInjector, FaultSpec, HealthGuard, HealthOptions
    from forgeline.health.guard import torch_gather
    from forgeline.health.signals import DiskSource, MemorySource, ThreadSource
    from forgeline.train.config import ModelConfig
    from forgeline.train.model import DecoderLM, lm_loss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{episode['port']}",
                            rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=PEER_TIMEOUT_S))
    torch.manual_seed(episode["seed"])  # the same initial model on every rank
    model = DecoderLM(ModelConfig.preset("tiny", seq_len=32, vocab_size=256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.from_numpy(_tokens()).long()
    rng = np.random.default_rng([episode["seed"], rank])
    work = Path(episode["work"]) / f"rank-{rank}"
    store = CheckpointStore("file://" + str(work / "ckpt"), CheckpointConfig(async_save=False))
    fill = work / "fill"
    fill.mkdir(parents=True, exist_ok=True)
    import psutil

    def train_step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch = torch.stack([data[s:s + 33] for s in rng.integers(0, len(data) - 33, 8)])
        loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        return loss, [p.grad for p in model.parameters() if p.grad is not None]

    def average(grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= WORLD
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    for _ in range(3):  # warm-up (not counted): autograd buffers and AdamW state allocated
        average(train_step()[1])
        opt.step()
    # the initial checkpoint (step 0): the store's first save starts its threads and
    # buffers, before the monitor's baseline (RSS, threads) is taken
    store.save({"model": model.state_dict(), "optim": opt.state_dict()}, 0)
    rss0 = psutil.Process().memory_info().rss
    fault = episode.get("fault") if rank == FAULT_RANK else None
    injector = FaultInjector(FaultSpec(**fault, disk_path=str(fill), leak_bytes=LEAK_BYTES,
                                       disk_bytes=DISK_BYTES)) if fault else None
    guard = None
    if episode["policy"] == "predictive":
        options = HealthOptions(enabled=True, mtbf_s=episode["mtbf_s"],
                                sample_every_steps=SAMPLE_EVERY,
                                max_interval_steps=episode.get("max_interval_steps"))
        sources = [MemorySource(rss0 + int(LEAK_BYTES * 1.05)), ThreadSource(),
                   DiskSource(str(fill), int(DISK_BYTES * 1.05))]
        guard = HealthGuard(options, FIXED_EVERY, rank=rank, world_size=WORLD,
                            gather=torch_gather, sources=sources)
    every = episode["every"]
    fd = os.open(trace_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def line(record: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(record) + "\n").encode())

    last_save, step_s, step = 0, None, 0
    try:
        for step in range(1, episode["steps"] + 1):
            started = time.perf_counter()
            if injector:
                injector.before_step(step, step_s)
            loss, grads = train_step()
            if injector:
                injector.after_backward(step, model.parameters())
            average(grads)
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
                    record["eta_steps"] = guard.eta_steps
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
            if episode.get("debug"):
                record["rss_mb"] = psutil.Process().memory_info().rss / 2**20
                record["threads"] = psutil.Process().num_threads()
            line(record)
            if injector:
                injector.after_step(step)
    except (MemoryError, OSError, RuntimeError) as exc:
        if injector is None:  # a healthy rank: its peer is gone (the collective failed)
            line({"peer_failed": step, "error": f"{type(exc).__name__}: {exc}"[:200]})
            os._exit(PEER_FAILED)
        line({"failed": step, "error": f"{type(exc).__name__}: {exc}"[:200]})
        os._exit(FAILED)
    finally:
        if injector:
            injector.cleanup()
    dist.destroy_process_group()
    os._exit(0)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _trace(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def run_episode(episode: dict[str, Any]) -> dict[str, Any]:
    """Fork the episode's WORLD ranks; read their traces back (they survive a SIGKILL).
    The job fails at the fault rank's failure; it resumes from the newest step every rank
    saved before it. Saves and hazards are the same on every rank (the same decisions);
    the overhead is the ranks' mean."""
    work = Path(tempfile.mkdtemp(prefix="forgeline-resilience-"))
    episode = {**episode, "work": str(work), "port": _free_port()}
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_worker, args=(episode, r, str(work / f"trace-{r}.jsonl")))
             for r in range(WORLD)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(PEER_TIMEOUT_S * 3)
        if proc.is_alive():
            proc.kill()
            proc.join()
    traces = [_trace(work / f"trace-{r}.jsonl") for r in range(WORLD)]
    shutil.rmtree(work, ignore_errors=True)
    ranks = [[r for r in t if "step" in r] for t in traces]
    faulty, steps = traces[FAULT_RANK], ranks[FAULT_RANK]
    last = steps[-1]["step"] if steps else 0
    failed = next((r["failed"] for r in faulty if "failed" in r), None)
    exitcode = procs[FAULT_RANK].exitcode
    if exitcode == -9:  # SIGKILL: the step that was running is lost
        failed = last + 1
    fail_step = failed or last
    saved = [{r["step"] for r in rs if "save" in r and r["step"] < fail_step} for rs in ranks]
    last_good = max(set.intersection(*saved) or {0})
    lead = ranks[0]
    per_rank = [sum(r.get("save_s", 0.0) + r.get("monitor_s", 0.0) for r in rs)
                for rs in ranks]
    return {
        "policy": episode["policy"], "fault": episode.get("fault"), "exitcode": exitcode,
        "exitcodes": [p.exitcode for p in procs],
        "failed_step": failed, "steps_run": last, "lost_steps": fail_step - last_good,
        "saves": sum(1 for r in lead if "save" in r and r["step"] <= fail_step),
        "proactive": [r["step"] for r in lead if r.get("save") in PROACTIVE_REASONS],
        "save_s": float(np.mean([sum(r.get("save_s", 0.0) for r in rs) for rs in ranks])),
        "save_blocked_s": [float(np.mean(c)) for c in zip(
            *([r["save_s"] for r in rs if "save" in r] for rs in ranks), strict=False)],
        "monitor_s": float(np.mean([sum(r.get("monitor_s", 0.0) for r in rs)
                                    for rs in ranks])),
        "overhead_s_per_rank": per_rank,
        "train_s": sum(r["step_s"] for r in steps),
        "hazard": [r.get("hazard") for r in lead][:last],
        "interval": [r.get("interval") for r in lead][-1:],
        "error": next((r["error"] for r in faulty if "error" in r), None),
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
    """Mean step time and median save cost of the loop (a fault-free episode saving every
    10 steps: the median of 12 saves, as one slow save moves a mean of a few by tens of %)."""
    from forgeline.health import FaultSpec  # noqa: F401  (imported before forking)

    run = run_episode({"policy": "fixed", "every": 10, "steps": 120, "seed": 99,
                       "mtbf_s": None})
    return {"step_s": run["train_s"] / max(1, run["steps_run"]),
            "save_s": float(np.median(run["save_blocked_s"]))}


def _predicted(run: dict[str, Any], horizon: int) -> bool:
    """Whether a proactive save or a hazard ≥ threshold came within the horizon before the
    failure (the controller callback's rule, ``forgeline.ray.checkpoint_callbacks``)."""
    if run["failed_step"] is None:
        return False
    start = max(0, run["failed_step"] - 1 - horizon)
    return any(start < s < run["failed_step"] for s in run["proactive"]) or any(
        x is not None and x >= 0.5 for x in run["hazard"][start:run["failed_step"]])


def injected(args: Any) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, Any]]:
    from forgeline.checkpoint import young_daly_interval_s
    from forgeline.health import HealthOptions

    n = 20 if args.quick else 40
    plan = faults(n, seed=1)
    cal = calibrate()
    mean_ttf_steps = float(np.mean([f["at_step"] for f in plan]))
    mtbf_s = mean_ttf_steps * cal["step_s"]
    yd_steps = max(1, round(young_daly_interval_s(cal["save_s"], mtbf_s) / cal["step_s"]))
    horizon = HealthOptions().horizon_steps
    longest = yd_steps if args.calm_interval == "young_daly" else None
    runs, unpredicted = [], 0
    for i, fault in enumerate(plan):
        unpred_mtbf_s = mtbf_s * (i + 1) / (unpredicted + 1)  # Laplace: i failures seen
        for policy, every in (("fixed", FIXED_EVERY), ("young_daly", yd_steps),
                              ("predictive", FIXED_EVERY)):
            run = run_episode({"policy": policy, "every": every, "steps": 400, "seed": i,
                               "fault": fault, "mtbf_s": unpred_mtbf_s,
                               "max_interval_steps": longest})
            run["scenario"] = "mixed"
            runs.append(run)
            print(f"{fault['kind']:12s} at {fault['at_step']:3d} lead {fault['lead_steps']:2d}"
                  f" {policy:11s} lost {run['lost_steps']:3d} saves {run['saves']:2d}"
                  f" ({len(run['proactive'])} proactive) exit {run['exitcode']}", flush=True)
        unpredicted += not _predicted(runs[-1], horizon)
    kills = [{"kind": "sigkill", "at_step": f["at_step"], "lead_steps": 0}
             for f in faults(6 if args.quick else 12, seed=2)]
    for i, fault in enumerate(kills):
        for policy, every in (("young_daly", yd_steps), ("predictive", FIXED_EVERY)):
            run = run_episode({"policy": policy, "every": every, "steps": 400, "seed": 100 + i,
                               "fault": fault, "mtbf_s": mtbf_s, "max_interval_steps": longest})
            run["scenario"] = "sigkill_only"
            runs.append(run)
    healthy_steps = 400 if args.quick else 2000
    healthy = run_episode({"policy": "predictive", "every": FIXED_EVERY,
                           "steps": healthy_steps, "seed": 7, "mtbf_s": mtbf_s,
                           "max_interval_steps": longest})
    healthy["scenario"] = "healthy"
    runs.append(healthy)
    return _injected_metrics(runs, horizon), runs, {
        "calibration": cal, "mtbf_steps": mean_ttf_steps, "mtbf_s": mtbf_s,
        "fixed_every_steps": FIXED_EVERY, "young_daly_every_steps": yd_steps,
        "predictive_calm_interval": args.calm_interval,
        "predictive_max_interval_steps": longest or FIXED_EVERY,
        "faults": len(plan), "sigkill_only_faults": len(kills), "workers_per_episode": WORLD,
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
        alarms += sum(1 for s in r["proactive"] if s <= end)
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
    ap = harness.parser("resilience", __doc__)
    ap.add_argument("--calm-interval", choices=("base", "young_daly"), default="base",
                    help="predictive's longest interval when the hazard is low: the fixed "
                    "base (forgeline's default) or Young/Daly's (max_interval_steps)")
    args = ap.parse_args()
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
