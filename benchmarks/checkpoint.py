"""Checkpoint benchmark: forgeline.checkpoint side by side with torch.save, DeepSpeed
save_checkpoint and torch.distributed.checkpoint (save, async_save) — same model, same state,
one run.

    python benchmarks/checkpoint.py [--quick] [--out benchmarks/results/checkpoint.json]

Setup: a residual MLP stack (full: 12 blocks of Linear(1024, 4096) + Linear(4096, 1024) =
100.7M parameters; quick: 6 blocks at width 512 = 12.6M) trained by a single-process
DeepSpeed engine (ZeRO 0, torch AdamW, fp32, gloo) on a fixed teacher-regression task
(micro-batch MICRO_BATCH rows), so the model and AdamW state are real and change between
checkpoints. STEPS_BETWEEN real optimizer steps between consecutive checkpoints; >= 10
checkpoints; the systems run in a rotated order at every checkpoint (A B C, B C A, ...). A
second sequence freezes the first half of the blocks (fine-tuning). Everything writes to the
same local disk; the disk's sequential write bandwidth is measured in the same run (fsync'd
writes of a file the size of one checkpoint; buffered ones too, which for a file that fits in
the page cache measure memory copy speed rather than the disk). Restore is timed locally
(page cache warm: files were just written — stated, not hidden) and through forgeline's
throttled filesystem (per-request latency + a bandwidth cap, so the page cache cannot hide
I/O): torch.load reads the bytes through it, forgeline restores from a throttled URL of its
store.

Training-overhead phase: blocks of training on the same engine, each a piece of a long run
with a checkpoint every STEPS_BETWEEN (5) or 50 steps. A block starts with an untimed
checkpoint, one interval of steps and the wait for its persist, so the timed part follows a
save one interval earlier, as in a long run (forgeline's CPU budget sees one interval's
training) and is never a store's first save or DCP's first async_save. Timed: @5, 4
checkpoints each followed by 5 steps; @50, 1 checkpoint followed by WINDOW_STEPS (10) steps
(its persisting is over by then; the rest of the interval is the same for every system);
then the wait until the last checkpoint is persisted. Systems: none, torch.save, DCP
async_save, forgeline async with its optimizer guard and its CPU budget ``fl_async``, and
without the budget ``fl_nobudget``; @50: none, DCP async_save, fl_async. They stay alive for
the whole phase. 3 rounds (@50: 4; quick: 2 and 3) of one block per system in a rotated
order; a system's cost is its block minus the "none" block of the same round (identical
blocks differ by up to ±10 % on this shared machine, and the pairing keeps that drift off the
difference), median over rounds. A checkpoint's blocking time is what the training thread
lost to it: torch.save's call; DCP async_save's call plus waiting for its previous save;
forgeline's save() call plus the time the next optimizer step waited for the overlapped
snapshot (CheckFreq-style: the copy runs during the next forward/backward). The wall time of
the training loop against "none" shows the cost did not just move elsewhere (background
persisting competes for the same 2 cores).

forgeline variants: ``fl_async`` (lossless, byte-grouping + zstd, content dedup, async),
``fl_delta`` (+ XOR delta against the parent checkpoint's chunks, keyframe every 8 saves —
the store's default), ``fl_lossy`` (fl_delta + ExCP-style lossy residuals of weights and
AdamW moments against the previous reconstruction, default bounds).
Metrics:
  stall_ratio_vs_torch_save            median forgeline blocking time per checkpoint / median
                                       torch.save time, both from the training-overhead phase
  bytes_ratio_full_dense_vs_torch_save first (full) fl_async checkpoint bytes / torch.save bytes
  bytes_ratio_frozen_half_vs_torch_save  fl_delta total bytes / torch.save total bytes over
                                       the frozen-half sequence
  persist_bw_fraction_of_disk          fl_async raw state bytes / persist time (median; save()
                                       to committed, nothing else running), over the measured
                                       fsync'd sequential disk write bandwidth (median)
  lossy_size_ratio                     torch.save bytes / fl_lossy bytes, summed over the dense
                                       sequence
  lossy_resume_loss_rel_delta          |loss_lossy - loss_lossless| / loss_lossless after
                                       restoring the last checkpoint and training K more steps
                                       (the last step's loss; training is deterministic here,
                                       every step's loss is in the JSON)
  restore_s_ratio_vs_torch_load        forgeline restore time / torch.load time (throttled)
  training_overhead_fl_vs_dcp_async@5  fl_async's extra wall time over "none" / DCP
                                       async_save's (each the median over rounds of the
                                       paired block difference), checkpoint every 5 steps;
                                       also @50
  resume_s_local_tier                  a restarted worker's restore_fastest (TieredStore saved
                                       to a local folder tier + a throttled remote) — it picks
                                       the local tier; median of 3
  resume_s_remote_tier                 the same from the remote tier only (throttled)
  resume_speedup_local_vs_remote       resume_s_remote_tier / resume_s_local_tier
  resume_s_ratio_vs_dcp_load           forgeline's fastest-tier resume / DCP load of the same
                                       state from the same throttled remote
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from forgeline.checkpoint import (  # noqa: E402
    CheckpointConfig,
    CheckpointStore,
    RetentionPolicy,
    collect_garbage,
)
from forgeline.checkpoint.config import TrainCheckpointing  # noqa: E402
from forgeline.train import skip_unused_deepspeed_ops  # noqa: E402

MICRO_BATCH = 32
STEPS_BETWEEN = 5
CPU_SHARE = TrainCheckpointing.model_fields["cpu_share"].default  # the training stage's
WINDOW_STEPS = 10  # @50: timed steps after the checkpoint (its persisting is over by then)
OVERHEAD_SAVES = 4  # the @5 phase's blocks: 4 checkpoints, each followed by STEPS_BETWEEN steps

TARGETS = {
    "stall_ratio_vs_torch_save": "<= 0.05",
    "bytes_ratio_full_dense_vs_torch_save": "<= 0.85",
    "bytes_ratio_frozen_half_vs_torch_save": "<= 0.40",
    "persist_bw_fraction_of_disk": ">= 0.70",
    "lossy_size_ratio": ">= 8",
    "lossy_resume_loss_rel_delta": "<= 0.01",
    "restore_s_ratio_vs_torch_load": "report",
    "training_overhead_fl_async_vs_none": "report",
    "training_overhead_torch_save_vs_none": "report",
    "training_overhead_fl_vs_dcp_async@5": "<= 1.0 (stretch <= 0.5)",
    "training_overhead_fl_vs_dcp_async@50": "<= 1.0 (stretch <= 0.5)",
    "resume_s_local_tier": "report",
    "resume_s_remote_tier": "report",
    "resume_speedup_local_vs_remote": ">= 5",
    "resume_s_ratio_vs_dcp_load": "<= 0.5",
}


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(x)))


def init_dist() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", LOCAL_RANK="0", RANK="0",
                      WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)


def build_engine(d: int, blocks: int, frozen_half: bool, seed: int = 0) -> Any:
    import deepspeed

    skip_unused_deepspeed_ops()  # as forgeline's train loop does
    torch.manual_seed(seed)
    model = nn.Sequential(*[Block(d) for _ in range(blocks)])
    if frozen_half:
        for block in list(model)[: blocks // 2]:
            block.requires_grad_(False)
    config = {
        "train_micro_batch_size_per_gpu": MICRO_BATCH, "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.01,
                                                  "torch_adam": True}},
        "zero_optimization": {"stage": 0}, "steps_per_print": 10**9,
    }
    params = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=config,
                                           dist_init_required=False)
    return engine


def make_task(d: int, seed: int = 1) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(d, d, generator=g) / d**0.5

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(MICRO_BATCH, d, generator=torch.Generator().manual_seed(10_000 + i))
        return x, torch.tanh(x @ teacher)

    return batch


FWD_BWD_S: list[float] = []  # forward+backward time of every training step (no optimizer step)


def train_step(engine: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = batch
    started = time.perf_counter()
    loss = F.mse_loss(engine(x), y)
    engine.backward(loss)
    FWD_BWD_S.append(time.perf_counter() - started)
    engine.step()
    return loss.item()


def state_of(engine: Any) -> dict[str, Any]:
    return {"model": engine.module.state_dict(), "optimizer": engine.optimizer.state_dict()}


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk_write_bw(folder: Path, nbytes: int, fsync: bool) -> float:
    """Sequential buffered write of ``nbytes`` (8 MiB writes) → bytes/s."""
    block = os.urandom(8 << 20)
    path = folder / f"disk-probe-{fsync}"
    started = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(max(1, nbytes // len(block))):
            f.write(block)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    seconds = time.perf_counter() - started
    written = path.stat().st_size
    path.unlink()
    return written / seconds


class Systems:
    """Every checkpointing system, each a callable (state, step) → measurement dict."""

    def __init__(self, root: Path, engine: Any, chunk_bytes: int, staging_bytes: int,
                 names: list[str]) -> None:
        self.root, self.engine, self.names = root, engine, names
        self.errors: dict[str, str] = {}
        base = dict(chunk_bytes=chunk_bytes, max_staging_bytes=staging_bytes)
        self.stores = {
            "fl_async": CheckpointStore(f"file://{root}/fl_async", CheckpointConfig(**base)),
            "fl_delta": CheckpointStore(f"file://{root}/fl_delta",
                                        CheckpointConfig(**base, delta=True)),
            "fl_lossy": CheckpointStore(f"file://{root}/fl_lossy",
                                        CheckpointConfig(**base, delta=True, lossy=True)),
        }
        self.keep_torch: Path | None = None

    def run(self, name: str, step: int) -> dict[str, Any]:
        if name in self.errors:
            return {"system": name, "step": step, "error": self.errors[name]}
        try:
            if name in self.stores:
                out = self._forgeline(name, step)
            else:
                out = getattr(self, "_" + name)(step)
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            return {"system": name, "step": step, "error": self.errors[name]}
        return {"system": name, "step": step, **out}

    def _forgeline(self, name: str, step: int) -> dict[str, Any]:
        store = self.stores[name]
        started = time.perf_counter()
        info = store.save(state_of(self.engine), step)
        blocked = time.perf_counter() - started
        store.wait()
        total = time.perf_counter() - started
        stats = store.last_stats
        collect_garbage(store.url, RetentionPolicy(keep_last=2, gc_grace_s=0))
        return {"blocked_s": blocked, "total_s": total, "bytes": stats["written_bytes"],
                "raw_bytes": info.raw_bytes, "chunks_written": stats["chunks_written"],
                "chunks": stats["chunks"]}

    def _torch_save(self, step: int) -> dict[str, Any]:
        path = self.root / f"torch-{step}.pt"
        started = time.perf_counter()
        torch.save(state_of(self.engine), path)
        seconds = time.perf_counter() - started
        size = path.stat().st_size
        if self.keep_torch is not None:
            self.keep_torch.unlink(missing_ok=True)
        self.keep_torch = path
        return {"blocked_s": seconds, "total_s": seconds, "bytes": size}

    def _ds_save(self, step: int) -> dict[str, Any]:
        folder = self.root / "ds"
        started = time.perf_counter()
        self.engine.save_checkpoint(str(folder), tag=f"s{step}")
        seconds = time.perf_counter() - started
        size = du(folder / f"s{step}")
        shutil.rmtree(folder)
        return {"blocked_s": seconds, "total_s": seconds, "bytes": size}

    def _dcp_save(self, step: int) -> dict[str, Any]:
        import torch.distributed.checkpoint as dcp

        folder = self.root / f"dcp-{step}"
        started = time.perf_counter()
        dcp.save(state_of(self.engine), checkpoint_id=str(folder))
        seconds = time.perf_counter() - started
        size = du(folder)
        shutil.rmtree(folder)
        return {"blocked_s": seconds, "total_s": seconds, "bytes": size}

    def _dcp_async_save(self, step: int) -> dict[str, Any]:
        import torch.distributed.checkpoint as dcp

        folder = self.root / f"dcpa-{step}"
        started = time.perf_counter()
        future = dcp.async_save(state_of(self.engine), checkpoint_id=str(folder))
        blocked = time.perf_counter() - started
        future.result()
        total = time.perf_counter() - started
        size = du(folder)
        shutil.rmtree(folder)
        return {"blocked_s": blocked, "total_s": total, "bytes": size}

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


def run_sequence(label: str, engine: Any, task: Callable, systems: Systems, checkpoints: int,
                 runs: list[dict[str, Any]]) -> None:
    names = systems.names
    for i in range(checkpoints):
        for k in range(STEPS_BETWEEN):
            loss = train_step(engine, task(i * STEPS_BETWEEN + k))
        step = (i + 1) * STEPS_BETWEEN
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            row = {"sequence": label, "loss": loss, **systems.run(name, step)}
            runs.append(row)
            if "error" not in row:
                print(f"{label:>7} step {step:2d} {name:>15}: blocked {row['blocked_s']:7.3f}s "
                      f"total {row['total_s']:7.3f}s bytes {row['bytes'] / 1e6:9.1f} MB",
                      file=sys.stderr)


FL_BUDGETS = {"fl_async": CPU_SHARE, "fl_nobudget": None}


class IntervalRunner:
    """The training-overhead phase's systems, alive for the whole phase (a warm store, DCP's
    warm writer), so that every measured block is a piece of a long run, not a store's first
    save (``block`` says what is timed)."""

    def __init__(self, root: Path, engine: Any, task: Callable, chunk_bytes: int,
                 staging_bytes: int, systems: list[str]) -> None:
        self.root, self.engine, self.task = root, engine, task
        self.stores = {}
        for name in systems:
            if name in FL_BUDGETS:
                self.stores[name] = CheckpointStore(f"file://{root}/{name}", CheckpointConfig(
                    chunk_bytes=chunk_bytes, max_staging_bytes=staging_bytes,
                    cpu_share=FL_BUDGETS[name]))
                self.stores[name].protect(engine)  # next optimizer step waits for the snapshot
        self.blocks, self.pending, self.infos = 0, None, []

    def block(self, system: str, every: int, saves: int, first_batch: int,
              window: int | None = None) -> dict[str, Any]:
        """Untimed lead-in: a checkpoint, ``every`` steps, its persist finished — so the
        timed saves follow a save ``every`` steps earlier, as in a long run (a CPU budget
        sees one interval's training). Timed: ``saves`` checkpoints, each followed by
        ``every`` steps (the last by ``window``, default ``every``), then the wait for the
        last persist."""
        self.blocks += 1
        step = first_batch
        self._save(system, 0)
        for _ in range(every):
            train_step(self.engine, self.task(step))
            step += 1
        self._drain(system)
        self.infos = []
        stalls, step_s = [], []
        started, cpu_started = time.perf_counter(), time.process_time()
        for s in range(saves):
            stalls.append(self._save(system, s + 1))
            for _ in range(every if s < saves - 1 or window is None else window):
                t_step = time.perf_counter()
                train_step(self.engine, self.task(step))
                step_s.append(time.perf_counter() - t_step)
                step += 1
        train_s = time.perf_counter() - started
        self._drain(system)
        drained_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started  # every thread of this process: background
        row = {"kind": "overhead", "system": system, "every": every, "checkpoints": saves,
               "timed_steps": len(step_s), "train_s": train_s, "train_plus_drain_s": drained_s,
               "cpu_s": cpu_s, "stall_s": stalls if system != "none" else [],
               "step_s_median": harness.median(step_s)}
        store = self.stores.get(system)
        if store is not None:  # retention outside the timed block, as a run's GC would be
            row["stall_s"] = [info.stall_s for info in self.infos]  # + the guard's wait
            row["guard_waited_s"] = [info.waited_s for info in self.infos]
            row["fast_path"] = [store.manifest(info.step).stats["fast_path"]
                                for info in self.infos]
            collect_garbage(store.url, RetentionPolicy(keep_last=1, gc_grace_s=0))
        shutil.rmtree(self.root / f"{system}-{self.blocks}", ignore_errors=True)
        return row

    def _save(self, system: str, index: int) -> float:
        """One checkpoint by ``system``; the seconds the training thread spent in the call."""
        import torch.distributed.checkpoint as dcp

        folder = self.root / f"{system}-{self.blocks}"
        started = time.perf_counter()
        if system == "torch_save":
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(state_of(self.engine), folder / "latest.pt")
        elif system == "dcp_async_save":
            self._drain(system)  # DCP allows one async save in flight
            self.pending = dcp.async_save(state_of(self.engine),
                                          checkpoint_id=str(folder / f"s{index}"))
        elif system in self.stores:
            info = self.stores[system].save(state_of(self.engine), self.blocks * 100 + index)
            if index:
                self.infos.append(info)
        return time.perf_counter() - started

    def _drain(self, system: str) -> None:
        if system == "dcp_async_save" and self.pending is not None:
            self.pending.result()
            self.pending = None
        elif system in self.stores:
            self.stores[system].wait()

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        shutil.rmtree(self.root, ignore_errors=True)


def interval_phase(runner: IntervalRunner, systems: list[str], every: int, saves: int,
                   rounds: int, runs: list[dict[str, Any]], *, window: int | None = None
                   ) -> None:
    """``rounds`` rounds of one block per system in a rotated order (A B C, B C A, ...), so
    drift of the shared machine lands on every system alike and each round pairs every
    system with a "none" block run beside it."""
    batch = 5000
    for rep in range(rounds):
        shift = rep % len(systems)
        for name in systems[shift:] + systems[:shift]:
            batch += (saves + 1) * every
            try:
                row = {"rep": rep, **runner.block(name, every, saves, batch, window)}
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported
                traceback.print_exc()
                row = {"kind": "overhead", "system": name, "rep": rep, "every": every,
                       "error": f"{type(exc).__name__}: {exc}"}
            runs.append(row)
            if "error" not in row:
                print(f"overhead@{every} {name:>15} round {rep}: "
                      f"{row['train_plus_drain_s']:7.2f}s stalls "
                      + " ".join(f"{v:.3f}" for v in row["stall_s"])
                      + (f" fast_path {row['fast_path']}" if "fast_path" in row else ""),
                      file=sys.stderr)


def resume_from_tiers(engine: Any, task: Callable, workdir: Path, step: int,
                      throttle: dict[str, float], config: CheckpointConfig
                      ) -> list[dict[str, Any]]:
    """Time a restarted worker's resume: forgeline from its local tier, from the remote
    tier only, and DCP load from the same (throttled) remote; interleaved, 3 reps. ``s`` is
    the restore (the metric); then the state is put into the engine (``load_s``) and one
    training step runs (``first_step_s``: the warm-up)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

    from forgeline.checkpoint import TierConfig, TieredStore, restore_fastest, tier_urls
    from forgeline.throttled import throttled_url

    remote = throttled_url(f"file://{workdir}/tiered-remote", bucket="fl-tiers", **throttle)
    tiers = TierConfig(local_url=str(workdir / "tiered-local"))
    with TieredStore(remote, tiers, config) as store:
        store.save(state_of(engine), step)
    dcp_folder = workdir / "dcp-remote"
    dcp.save(state_of(engine), checkpoint_id=str(dcp_folder))
    dcp_url = throttled_url(f"file://{dcp_folder}", bucket="dcp-tiers", **throttle)
    urls = tier_urls(remote, tiers, 0)
    rows, names = [], ["local", "remote", "dcp_load"]
    for rep in range(3):
        for name in names[rep % 3:] + names[: rep % 3]:
            row = {"kind": "resume_tier", "system": name, "rep": rep}
            t0 = time.perf_counter()
            try:
                if name == "dcp_load":
                    dcp.load(state_of(engine), storage_reader=FsspecReader(dcp_url))
                    row.update(tier="remote", s=time.perf_counter() - t0, load_s=0.0)
                else:
                    result = restore_fastest(urls if name == "local" else urls[-1:])
                    row.update(tier=result.tier, report=result.report(),
                               s=time.perf_counter() - t0)
                    t1 = time.perf_counter()
                    restore_into(engine, result.restored.state)
                    row["load_s"] = time.perf_counter() - t1
                    del result
                t2 = time.perf_counter()
                train_step(engine, task(20_000 + rep))
                row["first_step_s"] = time.perf_counter() - t2
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(f"resume {name:>9} rep {rep}: {row.get('s', float('nan')):7.3f}s "
                  f"tier {row.get('tier')}", file=sys.stderr)
    shutil.rmtree(dcp_folder, ignore_errors=True)
    return rows


def time_snapshot_copy(engine: Any, reps: int = 3) -> float:
    """Median time to copy the whole state once (what an inline snapshot costs)."""
    tensors = [t for t in state_tensors(state_of(engine))]
    seconds = []
    for _ in range(reps):
        t0 = time.perf_counter()
        copies = [t.clone() for t in tensors]
        seconds.append(time.perf_counter() - t0)
        del copies
    return harness.median(seconds)


def state_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in state_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in state_tensors(v)]
    return []


def median(rows: list[dict[str, Any]], key: str) -> float:
    return harness.median(r[key] for r in rows)


def spread(rows: list[dict[str, Any]], key: str) -> list[float]:
    return harness.spread(r[key] for r in rows)


def restore_into(engine: Any, state: dict[str, Any]) -> None:
    engine.module.load_state_dict(state["model"])
    engine.optimizer.load_state_dict(state["optimizer"])


def main() -> int:
    parser = harness.parser("checkpoint", __doc__)
    parser.add_argument("--workdir", default=None, help="Local folder for the checkpoints.")
    args = parser.parse_args()
    recorder = harness.Recorder("checkpoint", args, "torch", "numpy", "deepspeed", "zstandard")
    d, blocks = (512, 6) if args.quick else (1024, 12)
    checkpoints, resume_steps = 10, 10
    chunk_bytes = 4 << 20
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="forgeline-ckpt-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    init_dist()
    runs: list[dict[str, Any]] = []
    notes: list[str] = []

    # ---------------------------------------------------------------- dense sequence
    engine = build_engine(d, blocks, frozen_half=False)
    task = make_task(d)
    train_step(engine, task(-1))  # creates the AdamW state; warm-up, not measured
    n_params = sum(p.numel() for p in engine.module.parameters())
    state_bytes = sum(t.numel() * t.element_size() for t in engine.module.state_dict().values())
    state_bytes += sum(t.numel() * t.element_size() for s in engine.optimizer.state.values()
                       for t in s.values() if isinstance(t, torch.Tensor))
    staging = max(2 * state_bytes, 1 << 30)
    print(f"model: {n_params / 1e6:.1f}M parameters, state {state_bytes / 1e9:.2f} GB",
          file=sys.stderr)
    disk = []
    for rep in range(3 if args.quick else 2):
        disk.append({"kind": "disk_write", "rep": rep, "fsync": False,
                     "bytes_per_s": disk_write_bw(workdir, state_bytes, fsync=False)})
    names = ["torch_save", "fl_async", "fl_delta", "fl_lossy", "ds_save", "dcp_save",
             "dcp_async_save"]
    systems = Systems(workdir / "dense", engine, chunk_bytes, staging, names)
    (workdir / "dense").mkdir(exist_ok=True)
    run_sequence("dense", engine, task, systems, checkpoints, runs)
    for rep in range(3 if args.quick else 2):
        disk.append({"kind": "disk_write", "rep": rep + 10, "fsync": False,
                     "bytes_per_s": disk_write_bw(workdir, state_bytes, fsync=False)})
    for rep in range(3 if args.quick else 2):
        disk.append({"kind": "disk_write", "rep": rep, "fsync": True,
                     "bytes_per_s": disk_write_bw(workdir, state_bytes, fsync=True)})
    runs.extend(disk)

    # ---------------------------------------------------------------- training overhead
    copy_s = time_snapshot_copy(engine)
    FWD_BWD_S.clear()
    overhead_systems = ["none", "torch_save", "dcp_async_save", "fl_async", "fl_nobudget"]
    systems_at_50 = ["none", "dcp_async_save", "fl_async"]
    runner = IntervalRunner(workdir / "overhead", engine, task, chunk_bytes, staging,
                            overhead_systems)
    rounds = 2 if args.quick else 3
    interval_phase(runner, overhead_systems, STEPS_BETWEEN, OVERHEAD_SAVES, rounds, runs)
    interval_phase(runner, systems_at_50, 50, 1, rounds + 1, runs,
                   window=WINDOW_STEPS)
    runner.close()

    fwd_bwd_s = harness.median(FWD_BWD_S)
    runs.append({"kind": "timing", "forward_backward_s": fwd_bwd_s, "state_copy_s": copy_s})

    # ---------------------------------------------------------------- restore timing
    from forgeline.throttled import throttled_url

    last_step = checkpoints * STEPS_BETWEEN
    torch_path = systems.keep_torch
    fl_url = systems.stores["fl_async"].url
    throttle = {"latency_s": 0.002, "bandwidth_bytes_per_s": 400e6}
    t_url = throttled_url(f"file://{torch_path}", bucket="torch-restore", **throttle)
    f_url = throttled_url(fl_url, bucket="fl-restore", **throttle)
    restores = []
    for rep in range(3):
        for name in (["torch_load", "fl_restore"] if rep % 2 == 0
                     else ["fl_restore", "torch_load"]):
            for where in ("local", "throttled"):
                t0 = time.perf_counter()
                if name == "torch_load":
                    if where == "local":
                        loaded = torch.load(torch_path, weights_only=True)
                    else:
                        from forgeline import storage

                        fs, path = storage.filesystem(t_url)
                        loaded = torch.load(io.BytesIO(fs.cat_file(path)), weights_only=True)
                else:
                    store = CheckpointStore(fl_url if where == "local" else f_url)
                    loaded = store.restore(last_step).state
                    store.close()
                seconds = time.perf_counter() - t0
                del loaded
                restores.append({"kind": "restore", "system": name, "where": where, "rep": rep,
                                 "s": seconds})
    runs.extend(restores)
    notes.append("restore 'local' reads files just written (page cache warm); 'throttled' "
                 f"reads through forgeline.throttled ({throttle}) and is the metric")

    # ---------------------------------------------------------------- tiered resume
    resumes = resume_from_tiers(engine, task, workdir, last_step, throttle,
                                CheckpointConfig(chunk_bytes=chunk_bytes,
                                                 max_staging_bytes=staging))
    runs.extend(resumes)
    notes.append("resume: one TieredStore save (local tier = a folder on this disk, remote = "
                 f"forgeline.throttled over another folder, {throttle}), then a restarted "
                 "worker's restore_fastest: 'local' (the tier it picks: the local copy holds the "
                 "remote's latest step; its files were just written, page cache warm), 'remote' "
                 "(tiers = the remote root only), DCP load of the same state from the same "
                 "throttled remote (FsspecReader, in place). Checksums verified on every "
                 "forgeline path")

    # ---------------------------------------------------------------- lossy resume
    final_losses = {}
    for name in ("fl_delta", "fl_lossy"):
        store = CheckpointStore(systems.stores[name].url)
        restored = store.restore(last_step).state
        store.close()
        restore_into(engine, restored)
        losses = [train_step(engine, task(1000 + k)) for k in range(resume_steps)]
        final_losses[name] = losses[-1]
        runs.append({"kind": "resume", "system": name, "from_step": last_step,
                     "steps": resume_steps, "losses": losses, "final_loss": losses[-1]})
    systems.close()
    del engine
    shutil.rmtree(workdir / "dense", ignore_errors=True)

    # ---------------------------------------------------------------- frozen half
    engine = build_engine(d, blocks, frozen_half=True)
    train_step(engine, task(-1))
    frozen = Systems(workdir / "frozen", engine, chunk_bytes, staging,
                     ["torch_save", "fl_delta"])
    (workdir / "frozen").mkdir(exist_ok=True)
    run_sequence("frozen", engine, task, frozen, checkpoints, runs)
    frozen.close()
    shutil.rmtree(workdir / "frozen", ignore_errors=True)

    # ---------------------------------------------------------------- metrics
    def rows(seq: str, system: str) -> list[dict[str, Any]]:
        return [r for r in runs if r.get("sequence") == seq and r.get("system") == system
                and "error" not in r]

    torch_rows, fl_async = rows("dense", "torch_save"), rows("dense", "fl_async")
    buffered_bw = harness.median(r["bytes_per_s"] for r in disk if not r["fsync"])
    disk_bw = harness.median(r["bytes_per_s"] for r in disk if r["fsync"])
    persist_bw = harness.median(r["raw_bytes"] / r["total_s"] for r in fl_async)
    t_restore = [r["s"] for r in restores if r["system"] == "torch_load"
                 and r["where"] == "throttled"]
    f_restore = [r["s"] for r in restores if r["system"] == "fl_restore"
                 and r["where"] == "throttled"]
    frozen_torch = sum(r["bytes"] for r in rows("frozen", "torch_save"))

    def overhead(system: str, every: int = STEPS_BETWEEN) -> list[dict[str, Any]]:
        return [r for r in runs if r.get("kind") == "overhead" and r["system"] == system
                and r.get("every") == every and "error" not in r]

    def stalls(system: str) -> list[float]:
        return [v for r in overhead(system) for v in r["stall_s"]]

    def paired(system: str, every: int = STEPS_BETWEEN, key: str = "train_plus_drain_s",
               relative: bool = False) -> list[float]:
        """Per round: the system's block minus (or over) the "none" block of that round."""
        none = {r["rep"]: r[key] for r in overhead("none", every)}
        return [r[key] / none[r["rep"]] - 1 if relative else r[key] - none[r["rep"]]
                for r in overhead(system, every) if r["rep"] in none]

    def slowdown(system: str, every: int = STEPS_BETWEEN, key: str = "train_plus_drain_s"
                 ) -> float:
        return harness.median(paired(system, every, key, relative=True))

    def extra_s(system: str, every: int = STEPS_BETWEEN) -> float:
        return harness.median(paired(system, every))

    def resume_s(system: str) -> float:
        return harness.median(r["s"] for r in resumes if r["system"] == system and "s" in r)

    local_s, remote_s = resume_s("local"), resume_s("remote")

    metrics = {
        "stall_ratio_vs_torch_save": harness.median(stalls("fl_async"))
        / harness.median(stalls("torch_save")),
        "bytes_ratio_full_dense_vs_torch_save":
            rows("dense", "fl_async")[0]["bytes"] / torch_rows[0]["bytes"],
        "bytes_ratio_frozen_half_vs_torch_save":
            sum(r["bytes"] for r in rows("frozen", "fl_delta")) / frozen_torch,
        "persist_bw_fraction_of_disk": persist_bw / disk_bw,
        "lossy_size_ratio": sum(r["bytes"] for r in torch_rows)
        / sum(r["bytes"] for r in rows("dense", "fl_lossy")),
        "lossy_resume_loss_rel_delta":
            abs(final_losses["fl_lossy"] - final_losses["fl_delta"]) / final_losses["fl_delta"],
        "restore_s_ratio_vs_torch_load": harness.median(f_restore)
        / harness.median(t_restore),
        "training_overhead_fl_async_vs_none": slowdown("fl_async"),
        "training_overhead_torch_save_vs_none": slowdown("torch_save"),
        "training_overhead_fl_vs_dcp_async@5": extra_s("fl_async")
        / extra_s("dcp_async_save"),
        "training_overhead_fl_vs_dcp_async@50": extra_s("fl_async", 50)
        / extra_s("dcp_async_save", 50),
        "resume_s_local_tier": local_s,
        "resume_s_remote_tier": remote_s,
        "resume_speedup_local_vs_remote": remote_s / local_s,
        "resume_s_ratio_vs_dcp_load": min(local_s, remote_s) / resume_s("dcp_load"),
    }
    summary = {}
    for seq in ("dense", "frozen"):
        for system in sorted({r["system"] for r in runs if r.get("sequence") == seq}):
            ok = rows(seq, system)
            if not ok:
                continue
            summary[f"{seq}/{system}"] = {
                "blocked_s_median": median(ok, "blocked_s"),
                "blocked_s_spread": spread(ok, "blocked_s"),
                "total_s_median": median(ok, "total_s"),
                "bytes_total": sum(r["bytes"] for r in ok),
                "bytes_first": ok[0]["bytes"],
                "stall_vs_torch_save": median(ok, "blocked_s") / median(
                    rows(seq, "torch_save"), "total_s"),
                "bytes_vs_torch_save": sum(r["bytes"] for r in ok)
                / sum(r["bytes"] for r in rows(seq, "torch_save")),
            }
    summary["extra_metrics"] = {
        "bytes_ratio_dense_sequence_fl_delta_vs_torch_save":
            sum(r["bytes"] for r in rows("dense", "fl_delta")) / sum(
                r["bytes"] for r in torch_rows),
        "disk_write_bytes_per_s_buffered": buffered_bw,
        "disk_write_bytes_per_s_fsync": disk_bw,
        "persist_bw_fraction_of_buffered_write": persist_bw / buffered_bw,
        "fl_async_persist_bytes_per_s": persist_bw,
        "restore_s_ratio_vs_torch_load_local": harness.median(
            [r["s"] for r in restores if r["system"] == "fl_restore" and r["where"] == "local"])
        / harness.median([r["s"] for r in restores if r["system"] == "torch_load"
                             and r["where"] == "local"]),
        "final_loss_after_resume": final_losses,
        "training_overhead": {
            f"{system}@{every}": {
                "train_s_vs_none": slowdown(system, every, "train_s"),
                "train_plus_drain_s_vs_none": slowdown(system, every),
                "extra_s_per_round": paired(system, every),
                "extra_s_per_checkpoint": extra_s(system, every)
                / overhead(system, every)[0]["checkpoints"],
                # CPU seconds (all threads) each checkpoint added over "none"
                "extra_cpu_s_per_checkpoint": harness.median(paired(system, every, "cpu_s"))
                / overhead(system, every)[0]["checkpoints"],
                "stall_s_median": harness.median(v for r in overhead(system, every)
                                                 for v in r["stall_s"])}
            for every, systems_at in ((STEPS_BETWEEN, overhead_systems[1:]),
                                      (50, systems_at_50[1:]))
            for system in systems_at if overhead(system, every) and overhead("none", every)},
        "training_overhead_fl_nobudget_vs_dcp_async@5": extra_s("fl_nobudget")
        / extra_s("dcp_async_save"),
        "time_to_resume_breakdown_s": {  # detection and restart are Ray's: not in this run
            system: {
                "choose_s": harness.median(r["report"]["choose_s"] for r in ok)
                if system != "dcp_load" else None,
                "restore_s": harness.median(r["s"] for r in ok),
                "load_into_engine_s": harness.median(r["load_s"] for r in ok),
                "first_step_s": harness.median(r["first_step_s"] for r in ok)}
            for system in ("local", "remote", "dcp_load")
            if (ok := [r for r in resumes if r["system"] == system and "error" not in r])},
        "forward_backward_s": fwd_bwd_s,
        "state_copy_s": copy_s,
        "inline_snapshot_stall_ratio_vs_torch_save": median(fl_async, "blocked_s")
        / median(torch_rows, "total_s"),
    }
    notes.append(f"{STEPS_BETWEEN} optimizer steps (micro-batch {MICRO_BATCH}) between "
                 "checkpoints. Realistic runs checkpoint every tens to thousands of steps "
                 "(CheckFreq tunes to ~10-100 iterations); 5 keeps the run short while leaving "
                 "every chunk of weights and moments changed between checkpoints, so the byte "
                 "ratios are not flattered by unchanged state (except the frozen half). With "
                 "hundreds of steps between checkpoints the weight deltas and lossy residuals "
                 "grow (fewer residuals pruned), so fl_delta's and fl_lossy's sequence ratios "
                 "would be somewhat less favourable; full-checkpoint ratios do not depend on it")
    notes.append("training overhead: on this CPU-only machine the background hashing and "
                 "compression compete with training for the same cores, so a lower stall does "
                 "not mean zero cost: compare training_overhead_* (wall time vs no "
                 "checkpointing). On a GPU trainer the host cores mostly idle during steps")
    notes.append("stall: from the training-overhead phase; forgeline's save() returns at once, "
                 "the snapshot copy overlaps the next forward/backward "
                 f"({fwd_bwd_s:.3f} s here; a whole-state copy takes {copy_s:.3f} s) and the "
                 "next optimizer step waits for whatever is left, helping to copy; that wait "
                 "is counted in the stall. In the dense/frozen sequences fl saves are "
                 "unguarded (snapshot inside save()) and persist is timed to wait() with "
                 f"nothing else running; staging budget {staging / 2**30:.1f} GiB")
    notes.append("all systems write without fsync. The disk's sequential write bandwidth "
                 "(persist_bw_fraction_of_disk's denominator) is 8 MiB writes of one "
                 "checkpoint's size, fsync'd, after the dense sequence; buffered writes of the "
                 "same file are recorded too (before and after): when a checkpoint fits in the "
                 "page cache they measure memory copy speed, not the disk "
                 "(persist_bw_fraction_of_buffered_write)")
    print("\nsystem                    blocked(med)  total(med)  bytes/torch.save")
    for key, row in summary.items():
        if "blocked_s_median" in row:
            print(f"{key:<25} {row['blocked_s_median']:10.3f}s {row['total_s_median']:10.3f}s"
                  f" {row['bytes_vs_torch_save']:10.3f}")
    print("\nmetric                                   value     target")
    for key, value in metrics.items():
        print(f"{key:<40} {value:9.4f} {TARGETS[key]}")
    recorder.write(
        metrics, runs,
        model={"params": n_params, "state_bytes": state_bytes, "d_model": d,
               "blocks": blocks, "checkpoints": checkpoints, "chunk_bytes": chunk_bytes,
               "micro_batch": MICRO_BATCH, "steps_between_checkpoints": STEPS_BETWEEN,
               "overhead_block_saves@5": OVERHEAD_SAVES},
        targets=TARGETS, summary=summary, peer_errors={**systems.errors, **frozen.errors},
        notes=notes,
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
