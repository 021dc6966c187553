"""Benchmark of forgeline.cache: training on throttled (remote-like) storage, forgeline's
importance-aware cache against no cache, LRU and never-evict caches of the same bytes, and
fsspec's own block cache.

    python benchmarks/cache.py --out benchmarks/results/cache.json
    python benchmarks/cache.py --quick --out /tmp/cache.json

Setup (all systems in one run, same data, same machine, interleaved per seed):
- data: the built-in corpus (stdlib source) cut by forgeline.datasets into samples of
  ``WINDOW + 1`` bytes (16 KiB: "tens of KB"), one Parquet row group per sample, read through
  forgeline's throttled fsspec filesystem (20 ms per request — an object store's first-byte
  latency — and 50 MB/s shared by all threads and processes). Every read pays the throttle,
  so the OS page cache cannot hide I/O.
- training: 2 Ray actor workers, data-parallel (gloo all-reduce of gradients), the real
  ``DecoderLM`` (tiny preset) trained on a random 32-token crop of each sample; per-sample
  losses feed importance back.
- every system reads with the same 1 background reader thread per worker and the same
  clairvoyant prefetch window, so the only difference is what is cached and substituted.
- cache sizes 10/20/40% of the training set's decoded bytes; dataset = 10/5/2.5 x the cache.
- epoch 1 (cold) is reported separately; "steady" = median of epochs 2..E. Validation loss on
  fixed crops of the validation split after each epoch (outside the timed part).
- shared_two_jobs_slowdown: two 1-worker jobs on one cache server (forgeline @20%) at once,
  each job's training time / its time alone.
- server_stress_crashes / server_stress_calls: the cache server stress
  (``forgeline.cache.stress``) on a 16-thread server, run first.
- ``--quick``: 4 KiB samples of a 2.95 MB corpus (about as many samples as the full run, so
  each rank's epoch is still ~5 planning windows), one seed, the 20 % cache, 3 epochs.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from forgeline.cache import (
    CacheClient,
    CacheConfig,
    CachedBatches,
    CachedDataset,
    ImportanceSampler,
    connect,
    shutdown,
)
from forgeline.cache.stress import StressSpec, stress_server
from forgeline.datasets import DatasetConfig, TokenDataset, build_dataset
from forgeline.throttled import ThrottledFileSystem, throttled_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (benchmarks/harness.py, run from the repository root)

WINDOW = 16384
QUICK_WINDOW = 4096  # quick: 4 KiB samples, so an epoch holds about as many as the full run's
CROP = 32
MICRO = 16
LATENCY_S = 0.020
BANDWIDTH = 50e6
READERS = 1
SUBSTITUTION_RATIO = 0.3
SYSTEMS = ("nocache", "fsspec_blockcache", "forgeline", "lru", "never_evict")
VAL_STRIDE = 128  # validation: every validation sample, a 33-token crop every 128 tokens


class _NoCache:
    """A cache server that never holds anything: the 'no cache' peer, same read path."""

    def register(self, ns: str, size: int, **kw: Any) -> bool:
        return False

    def lookup(self, ns: str, indices: list[int]) -> tuple[list[bool], list[bool]]:
        return [False] * len(indices), [False] * len(indices)

    def new_epoch(self, ns: str, epoch: int) -> None:
        return None

    def get_many(self, ns: str, indices: list[int]) -> dict[int, bytes]:
        return {}

    def put_many(self, ns: str, items: list[tuple[int, bytes]]) -> int:
        return 0

    def substitutes(self, ns: str, n: int, exclude: list[int],
                    seed: int | None = None) -> dict[int, bytes]:
        return {}

    def feedback(self, ns: str, indices: list[int], losses: list[float]) -> None:
        return None

    def stats(self) -> dict[str, float]:
        return {}


@ray.remote(num_cpus=1)
class BenchWorker:
    """One data-parallel training worker; the process group lives across runs."""

    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.rank, self.world = 0, 1

    def init_group(self, rank: int, world: int, port: int) -> None:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
        self.rank, self.world = rank, world

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        import torch.distributed as dist

        from forgeline.train.model import DecoderLM, ModelConfig, per_sample_loss

        rank, world = (self.rank, self.world) if spec["distributed"] else (0, 1)
        sync = spec["distributed"] and world > 1
        torch.manual_seed(spec["seed"])
        model = DecoderLM(ModelConfig.preset("tiny", seq_len=CROP))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        system = spec["system"]
        url = spec["url"] if system != "fsspec_blockcache" else spec["blockcache_url"]
        if system in ("nocache", "fsspec_blockcache"):
            client: Any = CacheClient.__new__(CacheClient)
            client.server, client.remote = _NoCache(), False
        else:
            client = connect(CacheConfig.model_validate(spec["cache"]))
        data = CachedDataset(url, client, prefetch_threads=READERS)
        ratio = spec["substitution_ratio"] if system == "forgeline" else 0.0
        sampler = ImportanceSampler(data, spec["seed"], rank, world, ratio, window=4 * MICRO,
                                    multiple=MICRO,
                                    epochs=None)
        source = CachedBatches(data, sampler, MICRO)
        batches = iter(source)
        per_epoch = len(sampler) // MICRO
        val = TokenDataset(spec["local_url"], "validation")
        raw = val.get_many(list(range(len(val))))
        val_tokens = torch.from_numpy(np.stack([
            row[o : o + CROP + 1] for row in raw
            for o in range(0, raw.shape[1] - CROP - 1, VAL_STRIDE)])).long()
        rng = np.random.default_rng((spec["seed"], rank))
        epochs, train_s = [], 0.0
        for epoch in range(spec["epochs"]):
            if sync:
                dist.barrier()
            started = time.perf_counter()
            before = dict(data.counters), sampler.substitutions
            losses = []
            for _ in range(per_epoch):
                indices, tokens = next(batches)
                offsets = rng.integers(0, tokens.shape[1] - CROP - 1, len(tokens))
                crops = torch.stack([t[o : o + CROP + 1] for t, o in zip(tokens, offsets,
                                                                         strict=True)])
                sample_losses = per_sample_loss(model(crops[:, :-1]), crops[:, 1:])
                loss = sample_losses.mean()
                opt.zero_grad()
                loss.backward()
                if sync:
                    for p in model.parameters():
                        dist.all_reduce(p.grad)
                        p.grad /= world
                opt.step()
                source.feedback(indices, sample_losses.detach())
                losses.append(loss.item())
            if sync:
                dist.barrier()
            epoch_s = time.perf_counter() - started
            train_s += epoch_s
            with torch.no_grad():
                model.eval()
                val_loss = per_sample_loss(model(val_tokens[:, :-1]), val_tokens[:, 1:])
                model.train()
            after = data.counters
            epochs.append({
                "epoch": epoch, "epoch_s": epoch_s, "train_s_cumulative": train_s,
                "train_loss": float(np.mean(losses)), "val_loss": float(val_loss.mean()),
                "hits": after["hits"] - before[0]["hits"],
                "misses": after["misses"] - before[0]["misses"],
                "substitutions": sampler.substitutions - before[1],
                "remote_bytes": after["remote_bytes"] - before[0]["remote_bytes"],
                "wait_s": after["wait_s"] - before[0]["wait_s"],
                "sync_fetches": after["sync_fetches"] - before[0]["sync_fetches"],
                "samples": per_epoch * MICRO,
            })
        data.close()
        return {"rank": rank, "epochs": epochs}


def _merge(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per epoch: time = slowest rank; counters summed; losses averaged."""
    merged = []
    for per_rank in zip(*(r["epochs"] for r in results), strict=True):
        row = {"epoch": per_rank[0]["epoch"],
               "epoch_s": max(e["epoch_s"] for e in per_rank),
               "train_s_cumulative": max(e["train_s_cumulative"] for e in per_rank),
               "val_loss": per_rank[0]["val_loss"],
               "train_loss": float(np.mean([e["train_loss"] for e in per_rank]))}
        for key in ("hits", "misses", "sync_fetches", "substitutions", "remote_bytes", "wait_s",
                    "samples"):
            row[key] = sum(e[key] for e in per_rank)
        merged.append(row)
    return merged


def _summary(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    steady = epochs[1:]
    # substitutes are read from the cache with their batch, so "hits" includes them
    served = sum(e["hits"] for e in steady)
    samples = sum(e["samples"] for e in steady)
    return {
        "first_epoch_s": epochs[0]["epoch_s"],
        "steady_epoch_s": statistics.median(e["epoch_s"] for e in steady),
        "steady_hit_rate": sum(e["hits"] - e["substitutions"] for e in steady) / samples,
        "steady_substitution_rate": sum(e["substitutions"] for e in steady) / samples,
        "steady_served_from_cache_rate": served / samples,
        "steady_remote_bytes_per_epoch": statistics.median(e["remote_bytes"] for e in steady),
        "final_val_loss": epochs[-1]["val_loss"],
        "train_s": epochs[-1]["train_s_cumulative"],
    }


def _time_to(epochs: list[dict[str, Any]], target: float) -> float | None:
    for e in epochs:
        if e["val_loss"] <= target:
            return e["train_s_cumulative"]
    return None


def compute_metrics(runs: list[dict[str, Any]], shared: list[dict[str, Any]],
                    fractions: list[float]) -> tuple[dict[str, float], dict[str, Any]]:
    """The issue's metrics (medians over seeds) and their per-seed spread, from raw runs."""

    def ok(system: str, fraction: float | None) -> list[dict[str, Any]]:
        return [r for r in runs if r["system"] == system and r["fraction"] == fraction
                and "error" not in r]

    metrics: dict[str, float] = {}
    spread: dict[str, list[float]] = {}
    nocache = ok("nocache", None)
    for fraction in fractions:
        fl = ok("forgeline", fraction)
        tag = f"@{fraction:g}"
        for peer, name in (("nocache", "speedup_vs_nocache"), ("lru", "speedup_vs_lru"),
                           ("never_evict", "speedup_vs_never_evict"),
                           ("fsspec_blockcache", "speedup_vs_fsspec_blockcache")):
            den = ok(peer, None if peer in ("nocache", "fsspec_blockcache") else fraction)
            values = [d / f for d, f in zip(
                [next(x["steady_epoch_s"] for x in den if x["seed"] == r["seed"]) for r in fl
                 if any(x["seed"] == r["seed"] for x in den)],
                [r["steady_epoch_s"] for r in fl if any(x["seed"] == r["seed"] for x in den)],
                strict=True)]
            if values:
                metrics[name + tag] = statistics.median(values)
                spread[name + tag] = values
        # time to target: the uniform no-cache run's final validation loss (+1%), per seed
        tt = []
        lru = {r["seed"]: r for r in ok("lru", fraction)}
        for r in fl:
            base = next((n for n in nocache if n["seed"] == r["seed"]), None)
            if base is None or r["seed"] not in lru:
                continue
            target = base["final_val_loss"] * 1.01
            t_fl, t_lru = _time_to(r["epochs"], target), _time_to(lru[r["seed"]]["epochs"],
                                                                  target)
            tt.append({"seed": r["seed"], "target": target, "forgeline_s": t_fl,
                       "lru_s": t_lru})
        pairs = [t["lru_s"] / t["forgeline_s"] for t in tt if t["lru_s"] and t["forgeline_s"]]
        if pairs:
            metrics["time_to_target_speedup_vs_lru" + tag] = statistics.median(pairs)
            spread["time_to_target_speedup_vs_lru" + tag] = pairs
        spread["time_to_target_detail" + tag] = tt  # type: ignore[assignment]
        # accuracy: mean final validation loss over the seeds, forgeline vs uniform no-cache
        # (one run's final loss varies by a few % with the sample order alone, so the per-seed
        # pairs are kept in the spread and their median reported beside it)
        pairs_val = [(r["final_val_loss"], base["final_val_loss"]) for r in fl
                     for base in nocache if base["seed"] == r["seed"]]
        if pairs_val:
            mean_fl = statistics.mean(f for f, _ in pairs_val)
            mean_nc = statistics.mean(n for _, n in pairs_val)
            metrics["val_loss_rel_delta" + tag] = abs(mean_fl - mean_nc) / mean_nc
            signed = [(f - n) / n for f, n in pairs_val]
            metrics["val_loss_rel_delta_paired_median" + tag] = statistics.median(map(abs, signed))
            spread["val_loss_rel_delta_signed_per_seed" + tag] = signed
        for system in ("forgeline", "lru", "never_evict"):
            rows = ok(system, fraction)
            if rows:
                metrics[f"steady_served_from_cache_rate_{system}{tag}"] = statistics.median(
                    r["steady_served_from_cache_rate"] for r in rows)
    losses = [r["final_val_loss"] for r in nocache]
    if len(losses) > 1:  # what the sample order alone moves a final loss by, beside the deltas
        metrics["val_loss_nocache_seed_rel_range"] = (max(losses) - min(losses)) / statistics.mean(
            losses)
        metrics["val_loss_nocache_seed_rel_stdev"] = statistics.stdev(losses) / statistics.mean(
            losses)
    slowdowns = [s["together_train_s"] / s["alone_train_s"] for s in shared]
    if slowdowns:
        metrics["shared_two_jobs_slowdown"] = max(slowdowns)
        spread["shared_two_jobs_slowdown"] = slowdowns
    return metrics, spread


def main() -> None:
    ap = harness.parser("cache", __doc__)
    ap.add_argument("--seeds", type=int, help="repetitions (seeds 0..n-1); 3, quick 1")
    ap.add_argument("--fractions", help="cache sizes, share of data; 0.1,0.2,0.4, quick 0.2")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="peers to run")
    ap.add_argument("--substitution-ratio", type=float, default=SUBSTITUTION_RATIO)
    ap.add_argument("--no-shared", action="store_true", help="skip the two-jobs measurement")
    ap.add_argument("--stress-s", type=float, help="server stress seconds; 20, quick 6")
    ap.add_argument("--server-concurrency", type=int, default=1, help="cache server threads")
    ap.add_argument("--no-h-keep-unread", dest="h_keep_unread", action="store_false",
                    help="without the epoch-aware H part (CacheConfig.h_keep_unread)")
    ap.add_argument("--from-json", help="recompute the metrics of a saved run, write to --out")
    args = ap.parse_args()
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        doc["metrics"], doc["spread"] = compute_metrics(
            doc["runs"], doc["shared_runs"], doc["setup"]["cache_fractions"])
        doc["metrics"].update(doc.get("stress_metrics", {}))
        Path(args.out).write_text(json.dumps(doc, indent=2, default=float))
        print(json.dumps(doc["metrics"], indent=2))
        return
    quick = args.quick
    recorder = harness.Recorder("cache", args, "torch", "ray", "fsspec", "numpy")
    # quick: smaller samples of a smaller corpus, so each rank's epoch is still ~6 planning
    # windows (the full run's shape), one seed and the 20 % cache only
    window = QUICK_WINDOW if quick else WINDOW
    source_bytes = 2_950_000 if quick else 12_000_000
    epochs = 3 if quick else 4
    seeds = list(range(args.seeds or (1 if quick else 3)))
    fractions = [float(x) for x in (args.fractions or ("0.2" if quick else "0.1,0.2,0.4"))
                 .split(",")]
    systems = args.systems.split(",")

    work = Path(tempfile.mkdtemp(prefix="forgeline-bench-cache-"))
    built = build_dataset(
        DatasetConfig(window_tokens=window, max_source_bytes=source_bytes, val_fraction=0.02,
                      rows_per_group=1),
        f"file://{work}/data",
    )
    sample_bytes = window + 1
    data_bytes = built.train_samples * sample_bytes
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    url = throttled_url(built.manifest_url, LATENCY_S, BANDWIDTH, bucket)
    blockcache_url = "blockcache::" + url
    throttle = ThrottledFileSystem("file", bandwidth_bytes_per_s=BANDWIDTH, bucket=bucket)
    print(f"dataset: {built.train_samples} train samples x {sample_bytes} B = "
          f"{data_bytes / 1e6:.1f} MB decoded, {built.bytes_written / 1e6:.1f} MB on storage")

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    stress = stress_server(StressSpec(seconds=args.stress_s or (6.0 if quick else 20.0),
                                      concurrency=16, kill_rounds=1))
    stress_metrics = {"server_stress_crashes": stress.crashes,
                      "server_stress_calls": stress.calls,
                      "server_stress_wrong_values": stress.wrong_values}
    print(f"stress: {stress.as_dict()}")
    workers = [BenchWorker.remote() for _ in range(2)]
    port = 29500 + os.getpid() % 1000
    ray.get([w.init_group.remote(r, 2, port) for r, w in enumerate(workers)])

    def run(system: str, fraction: float | None, seed: int, job_workers: list[Any] | None = None,
            cache_name: str | None = None, distributed: bool = True) -> dict[str, Any]:
        cache = None
        if fraction is not None:
            policy = {"forgeline": "importance", "lru": "lru", "never_evict": "never_evict"}
            cache = CacheConfig(capacity_bytes=int(fraction * data_bytes),
                                policy=policy[system],
                                server_concurrency=args.server_concurrency,
                                h_keep_unread=args.h_keep_unread,
                                server_name=cache_name or f"bench-{uuid.uuid4().hex[:8]}")
        spec = {"system": system, "seed": seed, "epochs": epochs, "url": url,
                "blockcache_url": blockcache_url, "local_url": built.manifest_url,
                "cache": cache.model_dump() if cache else None, "distributed": distributed,
                "substitution_ratio": args.substitution_ratio}
        before = throttle.stats()
        started = time.perf_counter()
        try:
            results = ray.get([w.run.remote(spec) for w in (job_workers or workers)])
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported
            return {"system": system, "fraction": fraction, "seed": seed,
                    "error": f"{type(exc).__name__}: {str(exc)[-400:]}"}
        finally:
            if cache is not None and cache_name is None:
                shutdown(cache)
        merged = _merge(results)
        after = throttle.stats()
        record = {"system": system, "fraction": fraction, "seed": seed,
                  "wall_s": time.perf_counter() - started, "epochs": merged,
                  "storage_requests": after["requests"] - before["requests"],
                  "storage_bytes": after["bytes"] - before["bytes"], **_summary(merged)}
        print(f"  {system:18s} cache={fraction or 0:.0%} seed={seed} first="
              f"{record['first_epoch_s']:.2f}s steady={record['steady_epoch_s']:.2f}s "
              f"served-from-cache={record['steady_served_from_cache_rate']:.2f} "
              f"val={record['final_val_loss']:.4f}")
        return record

    runs: list[dict[str, Any]] = []
    for seed in seeds:  # interleaved: every system once per seed
        runs.extend(run(system, None, seed) for system in ("nocache", "fsspec_blockcache")
                    if system in systems)
        for fraction in fractions:
            runs.extend(run(system, fraction, seed) for system in ("forgeline", "lru",
                                                                   "never_evict")
                        if system in systems)

    # two concurrent 1-worker jobs on one shared cache server vs each alone
    shared = []
    for seed in [] if args.no_shared else seeds[:1] if quick else seeds:
        name = f"bench-shared-{uuid.uuid4().hex[:8]}"
        alone = [run("forgeline", 0.2, seed + k, [workers[k]], name + f"-a{k}", False)
                 for k in range(2)]
        for k in range(2):
            shutdown(CacheConfig(server_name=name + f"-a{k}"))
        started = time.perf_counter()
        spec_name = name + "-both"
        refs = []
        cache = CacheConfig(capacity_bytes=int(0.2 * data_bytes), server_name=spec_name,
                            server_concurrency=args.server_concurrency,
                            h_keep_unread=args.h_keep_unread)
        connect(cache)
        for k in range(2):
            spec = {"system": "forgeline", "seed": seed + k, "epochs": epochs, "url": url,
                    "blockcache_url": blockcache_url, "local_url": built.manifest_url,
                    "cache": cache.model_dump(), "distributed": False,
                    "substitution_ratio": args.substitution_ratio}
            refs.append(workers[k].run.remote(spec))
        together = [_merge([r]) for r in ray.get(refs)]
        shutdown(cache)
        for k in range(2):
            shared.append({"seed": seed + k, "alone_train_s": alone[k]["train_s"],
                           "together_train_s": together[k][-1]["train_s_cumulative"],
                           "together_epochs": together[k],
                           "together_wall_s": time.perf_counter() - started})
        print(f"  shared: alone {[round(a['train_s'], 2) for a in alone]} together "
              f"{[round(t[-1]['train_s_cumulative'], 2) for t in together]}")
    ray.shutdown()

    metrics, spread = compute_metrics(runs, shared, fractions)
    metrics.update(stress_metrics)
    recorder.write(
        metrics, runs, spread=spread, shared_runs=shared, stress=stress.as_dict(),
        stress_metrics=stress_metrics,
        setup={
            "train_samples": built.train_samples, "sample_bytes": sample_bytes,
            "dataset_decoded_bytes": data_bytes, "dataset_stored_bytes": built.bytes_written,
            "latency_s": LATENCY_S, "bandwidth_bytes_per_s": BANDWIDTH,
            "readers_per_worker": READERS, "workers": 2, "micro_batch": MICRO, "crop": CROP,
            "planning_window_samples": 4 * MICRO,
            "epochs": epochs, "seeds": seeds, "cache_fractions": fractions,
            "forgeline_substitution_ratio": args.substitution_ratio,
            "server_concurrency": args.server_concurrency,
            "h_keep_unread": args.h_keep_unread,
            "warmup": "none excluded inside a run: epoch 1 (cold cache, shard footers) is "
                      "reported as first_epoch_s, metrics use steady epochs 2..E",
            "page_cache": "every read goes through the throttled filesystem (20 ms per request "
                          "+ a shared 50 MB/s cap), so page-cache hits still pay remote cost",
            "dataset_vs_cache": "dataset is 10x / 5x / 2.5x the 10/20/40% caches",
            "shared_jobs": "two 1-worker jobs, forgeline @20%, one cache server, same data",
            "val": f"every validation sample, a {CROP + 1}-token crop every {VAL_STRIDE} tokens",
            "stress": "6 clients x 4 threads on a 16-thread server under PYTHONMALLOC=debug, "
                      "values up to 1 MiB in 24 MiB, then a kill with calls in flight",
        },
    )


if __name__ == "__main__":
    main()
