"""Short real trials of candidate configurations through Ray Train + DeepSpeed.

Each candidate's emitted DeepSpeed config runs a few optimizer steps of
:class:`forgeline.train.model.DecoderLM` in ``num_workers`` Ray Train workers (one fresh
process each); warm-up steps are excluded, then every worker times ``steps`` optimizer
steps and records its peak memory. The results become :class:`Observation` s for
:func:`forgeline.search.calibration`.

Memory on CPU: each worker resets the kernel's resident-set high-water mark
(``/proc/self/clear_refs`` = 5) and reads its RSS just before building the model; the
peak is ``VmHWM`` after the last step minus that RSS, i.e. model states + activations +
buffers (+ allocator slack), not the interpreter, torch, DeepSpeed or Ray. Where
``clear_refs`` is not writable it falls back to ``ru_maxrss`` (a lifetime peak, still
minus the same baseline). On CUDA it is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import copy
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from forgeline import storage
from forgeline.errors import ConfigError
from forgeline.search.calibration import Observation
from forgeline.search.cost_model import estimate
from forgeline.search.emitter import emit, for_cpu
from forgeline.search.plan import ParallelConfig, Plan
from forgeline.search.specs import ClusterSpec, ModelSpec, TrainingSpec

MEMORY_METHOD_CPU = ("peak RSS (VmHWM after resetting it via /proc/self/clear_refs) minus RSS "
                     "just before the model is built; falls back to ru_maxrss minus that RSS")
MEMORY_METHOD_CUDA = "torch.cuda.max_memory_allocated after reset_peak_memory_stats"


class TrialResult(BaseModel):
    """What one trial measured, per worker, plus what ran."""

    model_config = {"protected_namespaces": ()}

    config: ParallelConfig
    model: ModelSpec = Field(description="the shape that ran (dtypes as trained)")
    training: TrainingSpec
    num_workers: int
    deepspeed_config: dict[str, Any]
    worker_step_time_s: list[float] = Field(description="median timed step of each worker")
    worker_step_times_s: list[list[float]] = Field(description="every timed step, per worker")
    worker_peak_memory_bytes: list[float] = Field(description="peak minus baseline, per worker")
    worker_baseline_rss_bytes: list[float] = Field(description="RSS before the model was built")
    losses: list[float] = Field(description="rank 0's last micro-batch loss of every step")
    memory_method: str
    torch_threads: int
    warmup_steps: int
    steps: int
    load_average_1m: float = Field(description="os.getloadavg()[0] when the trial ended")
    wall_s: float = Field(description="whole trial incl. Ray Train start-up")

    @property
    def step_time_s(self) -> float:
        """The slowest worker's median step (ranks wait for one another every step)."""
        return max(self.worker_step_time_s)

    @property
    def peak_memory_bytes(self) -> float:
        """The most loaded worker's peak."""
        return max(self.worker_peak_memory_bytes)

    def observation(self, source: str = "") -> Observation:
        return Observation(model=self.model, config=self.config, training=self.training,
                           step_time_s=self.step_time_s, peak_memory_bytes=self.peak_memory_bytes,
                           source=source or describe(self.config, self.model))


def describe(config: ParallelConfig, model: ModelSpec) -> str:
    """A short label: model shape and the DP/ZeRO/micro-batch/recompute choice."""
    return (f"L{model.layers}h{model.hidden}s{model.seq_len} d={config.data_parallel} "
            f"zero={config.zero_stage} mb={config.micro_batch_size} rc={config.recompute}")


# ---- model shapes -----------------------------------------------------------------------
def model_spec_for(config: Any, dtype: str = "fp32", name: str = "decoder-lm") -> ModelSpec:
    """The :class:`ModelSpec` of a ``forgeline.train.model.ModelConfig`` trained in ``dtype``."""
    return ModelSpec(
        name=name, layers=config.n_layers, hidden=config.d_model, heads=config.n_heads,
        ffn_hidden=config.ffn_mult * config.d_model, seq_len=config.seq_len,
        vocab=config.vocab_size, tied_embeddings=False, learned_position_embeddings=True,
        dropout=config.dropout > 0, param_dtype=dtype, grad_dtype=dtype, optimizer_dtype="fp32",
    )


def decoder_config_for(spec: ModelSpec) -> dict[str, Any]:
    """Fields of ``ModelConfig`` (as a dict) for a :class:`ModelSpec` DecoderLM can build."""
    if spec.ffn_hidden % spec.hidden:
        raise ConfigError("model.ffn_hidden", spec.ffn_hidden,
                          f"DecoderLM needs a multiple of hidden={spec.hidden}")
    if spec.tied_embeddings:
        raise ConfigError("model.tied_embeddings", True, "DecoderLM's output head is untied")
    if not spec.learned_position_embeddings:
        raise ConfigError("model.learned_position_embeddings", False,
                          "DecoderLM has a learned position table")
    return {"n_layers": spec.layers, "d_model": spec.hidden, "n_heads": spec.heads,
            "ffn_mult": spec.ffn_hidden // spec.hidden, "seq_len": spec.seq_len,
            "vocab_size": spec.vocab, "dropout": 0.0}


def _resolve_model(model: Any, training: TrainingSpec) -> tuple[ModelSpec, dict[str, Any]]:
    dtype = "fp32" if training.precision in ("fp32", "tf32") else training.precision
    if isinstance(model, ModelSpec):
        for field in ("param_dtype", "grad_dtype"):
            if getattr(model, field) != dtype:
                raise ConfigError(f"model.{field}", getattr(model, field),
                                  f"trials train in training.precision={training.precision!r}; "
                                  f"use {dtype!r}")
        if model.dropout:
            raise ConfigError("model.dropout", True, "trials run DecoderLM without dropout")
        return model, decoder_config_for(model)
    if hasattr(model, "n_layers") and hasattr(model, "d_model"):
        fields = model.model_dump()
        fields.pop("activation_checkpointing", None)
        return model_spec_for(model, dtype), fields
    raise ConfigError("model", type(model).__name__, "expected a ModelSpec or a ModelConfig")


# ---- DeepSpeed config for a trial ------------------------------------------------------
def trial_deepspeed_config(config: ParallelConfig, model: ModelSpec, training: TrainingSpec,
                           device: str = "cpu") -> dict[str, Any]:
    """The emitted DeepSpeed config, adapted where the device needs it (CPU: torch Adam)."""
    ds = copy.deepcopy(emit(config, model, training).deepspeed_config)
    if device == "cpu":
        ds = for_cpu(ds)
    ds["steps_per_print"] = 10**9
    return ds


@dataclass(frozen=True)
class TrialSettings:
    """How every trial of a batch runs: timed and warm-up steps, device, threads, seed, and
    where workers write their results (a temporary directory when ``None``)."""

    steps: int = 4
    warmup_steps: int = 2
    device: str = "cpu"
    threads_per_worker: int = 1
    seed: int = 0
    results_url: str | None = None


def _check(candidates: list[Any], training: TrainingSpec, settings: TrialSettings,
           cluster: ClusterSpec | None) -> list[ParallelConfig]:
    steps, warmup_steps, device = settings.steps, settings.warmup_steps, settings.device
    if not candidates:
        raise ConfigError("candidates", candidates, "need at least one configuration to run")
    if steps < 1:
        raise ConfigError("steps", steps, "must be at least 1 timed step")
    if warmup_steps < 0:
        raise ConfigError("warmup_steps", warmup_steps, "must be 0 or more")
    if device not in ("cpu", "cuda"):
        raise ConfigError("device", device, "must be 'cpu' or 'cuda'")
    if device == "cpu" and training.precision not in ("fp32", "tf32"):
        raise ConfigError("training.precision", training.precision,
                          "CPU trials run in fp32 (DeepSpeed's CPU accelerator)")
    configs = []
    for i, cand in enumerate(candidates):
        cfg = cand.config if isinstance(cand, Plan) else cand
        if not isinstance(cfg, ParallelConfig):
            raise ConfigError(f"candidates[{i}]", type(cand).__name__,
                              "expected a ParallelConfig or a Plan")
        for name in ("tensor_parallel", "pipeline_parallel"):
            if getattr(cfg, name) > 1:
                raise ConfigError(f"candidates[{i}].{name}", getattr(cfg, name),
                                  "trials run DeepSpeed data parallel / ZeRO only (t = p = 1)")
        if cfg.recompute == "selective":
            raise ConfigError(f"candidates[{i}].recompute", cfg.recompute,
                              "DecoderLM checkpoints whole blocks: use 'none' or 'full'")
        if device == "cpu" and cfg.offload != "none":
            raise ConfigError(f"candidates[{i}].offload", cfg.offload,
                              "on CPU there is no device memory to offload from")
        if cluster is not None and cfg.devices > cluster.total_devices:
            raise ConfigError(f"candidates[{i}].data_parallel", cfg.data_parallel,
                              f"more workers than the cluster's {cluster.total_devices} devices")
        configs.append(cfg)
    return configs


# ---- worker side --------------------------------------------------------------------------
def _rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes(reset_worked: bool) -> int:
    if reset_worked:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warm_up_runtime(deepspeed: Any, torch: Any, ds: dict[str, Any], device: str) -> None:
    """One step of a throwaway 20-parameter engine with the same ZeRO stage and optimizer.

    DeepSpeed loads its communication extension, ZeRO modules and thread pools on first
    use (about 80 MB of RSS on CPU); doing that before the baseline keeps the runtime out
    of the measured peak, which is then the model's states, activations and buffers.
    """
    tiny = torch.nn.Linear(4, 4)
    if device == "cuda":
        tiny = tiny.cuda()
    cfg = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
           "optimizer": ds["optimizer"], "zero_optimization": ds.get("zero_optimization", {}),
           "steps_per_print": 10**9}
    engine, _, _, _ = deepspeed.initialize(model=tiny, model_parameters=tiny.parameters(),
                                           config=cfg, dist_init_required=False)
    loss = engine(torch.randn(1, 4, device=next(tiny.parameters()).device)).sum()
    engine.backward(loss)
    engine.step()
    del engine, tiny, loss
    import gc

    gc.collect()


def _trial_worker(cfg: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: build, initialise, warm up, time, write JSON."""
    device = cfg["device"]
    os.environ.setdefault("DS_ACCELERATOR", device)
    import deepspeed
    import torch
    import torch.distributed as dist

    from forgeline.train.deepspeed_ops import skip_unused_deepspeed_ops
    from forgeline.train.model import DecoderLM, ModelConfig, lm_loss

    skip_unused_deepspeed_ops()
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device == "cpu":
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"] + rank)
    mcfg = ModelConfig(**cfg["model"], activation_checkpointing=cfg["recompute"] == "full")
    ds = cfg["deepspeed_config"]
    mb, ga = ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]
    # One fixed set of random byte-token micro-batches, cycled: the model can memorise it,
    # so a falling loss shows the emitted config really trains.
    batches = [torch.randint(0, mcfg.vocab_size, (mb, mcfg.seq_len + 1), generator=gen)
               for _ in range(ga)]
    _warm_up_runtime(deepspeed, torch, ds, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline, reset = torch.cuda.memory_allocated(), True
        batches = [b.cuda() for b in batches]
    else:
        reset = _reset_peak()
        baseline = _rss_bytes()
    model = DecoderLM(mcfg)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=ds, dist_init_required=False)
    times, losses = [], []
    for step in range(cfg["warmup_steps"] + cfg["steps"]):
        start = time.perf_counter()
        for tokens in batches:
            loss = lm_loss(engine(tokens[:, :-1]), tokens[:, 1:])
            engine.backward(loss)
            engine.step()
        value = loss.item()  # waits for the device
        if step >= cfg["warmup_steps"]:
            times.append(time.perf_counter() - start)
        losses.append(value)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = _peak_rss_bytes(reset) - baseline
    storage.write_json_atomic(storage.join(cfg["results_url"], f"rank{rank}.json"), {
        "rank": rank, "step_times_s": times, "losses": losses, "peak_memory_bytes": peak,
        "baseline_bytes": baseline, "peak_reset": reset, "threads": torch.get_num_threads(),
    })


# ---- driver side --------------------------------------------------------------------------
def run_trial(candidate: ParallelConfig | Plan, model: Any, training: TrainingSpec, *,
              steps: int = 4, warmup_steps: int = 2, device: str = "cpu",
              threads_per_worker: int = 1, seed: int = 0,
              results_url: str | None = None) -> TrialResult:
    """Run one candidate for ``warmup_steps + steps`` optimizer steps; see :func:`run_trials`."""
    settings = TrialSettings(steps, warmup_steps, device, threads_per_worker, seed, results_url)
    return _run(_check([candidate], training, settings, None)[0], model, training, settings)


def _run(config: ParallelConfig, model: Any, training: TrainingSpec,
         settings: TrialSettings) -> TrialResult:
    steps, warmup_steps, device = settings.steps, settings.warmup_steps, settings.device
    threads, seed, results_url = settings.threads_per_worker, settings.seed, settings.results_url
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    spec, fields = _resolve_model(model, training)
    config.check(spec, _any_cluster(config.devices), training)
    ds = trial_deepspeed_config(config, spec, training, device)
    num_workers = emit(config, spec, training).num_workers
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(include_dashboard=False)
    scratch = tempfile.mkdtemp(prefix="forgeline-trial-")
    url = results_url or f"file://{scratch}"
    url = storage.join(url, uuid.uuid4().hex[:12])
    started = time.perf_counter()
    try:
        trainer = TorchTrainer(
            _trial_worker,
            train_loop_config={"device": device, "threads": threads, "seed": seed,
                               "model": fields, "recompute": config.recompute,
                               "deepspeed_config": ds, "warmup_steps": warmup_steps,
                               "steps": steps, "results_url": url},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=device == "cuda",
                                         resources_per_worker={"CPU": threads}),
            run_config=RunConfig(name=f"forgeline-trial-{uuid.uuid4().hex[:8]}",
                                 storage_path=os.path.join(scratch, "ray")),
        )
        trainer.fit()
    finally:
        if owns_ray:
            ray.shutdown()
    wall = time.perf_counter() - started
    ranks = []
    for r in range(num_workers):
        path = storage.join(url, f"rank{r}.json")
        if not storage.exists(path):
            raise ConfigError("results_url", url, f"worker {r} wrote no result ({path}); "
                              "workers and driver must share this storage")
        ranks.append(storage.read_json(path))
    if results_url is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return TrialResult(
        config=config, model=spec, training=training, num_workers=num_workers,
        deepspeed_config=ds,
        worker_step_time_s=[statistics.median(r["step_times_s"]) for r in ranks],
        worker_step_times_s=[r["step_times_s"] for r in ranks],
        worker_peak_memory_bytes=[max(float(r["peak_memory_bytes"]), 1.0) for r in ranks],
        worker_baseline_rss_bytes=[float(r["baseline_bytes"]) for r in ranks],
        losses=ranks[0]["losses"],
        memory_method=(MEMORY_METHOD_CUDA if device == "cuda" else
                       MEMORY_METHOD_CPU if all(r["peak_reset"] for r in ranks) else
                       "ru_maxrss minus RSS before the model is built"),
        torch_threads=ranks[0]["threads"], warmup_steps=warmup_steps, steps=steps,
        load_average_1m=os.getloadavg()[0], wall_s=wall,
    )


def _any_cluster(devices: int) -> ClusterSpec:
    """A stand-in cluster for validation only (the trial runs wherever Ray puts it)."""
    return ClusterSpec(name="trial", nodes=1, devices_per_node=max(devices, 1),
                       device_memory_bytes=1, peak_flops_per_s={"fp32": 1.0, "tf32": 1.0,
                                                                "bf16": 1.0, "fp16": 1.0,
                                                                "fp8": 1.0},
                       hbm_bytes_per_s=1.0, intra_node_bytes_per_s=1.0,
                       inter_node_bytes_per_s=1.0, host_memory_bytes=1,
                       host_memory_bytes_per_s=1.0, host_link_bytes_per_s=1.0,
                       matmul_efficiency=[(1.0, 1.0)], memory_efficiency=[(1.0, 1.0)])


def run_trials(candidates: list[ParallelConfig | Plan], model: Any,
               cluster: ClusterSpec | None, training: TrainingSpec, *, steps: int = 4,
               warmup_steps: int = 2, repetitions: int = 1, device: str = "cpu",
               threads_per_worker: int = 1, seed: int = 0,
               results_url: str | None = None,
               trial_results: list[TrialResult] | None = None) -> list[Observation]:
    """Run each candidate's emitted DeepSpeed config for a few real steps under Ray Train.

    ``model`` is a :class:`ModelSpec` or a ``forgeline.train.model.ModelConfig``; each
    candidate runs in ``data_parallel`` workers of ``threads_per_worker`` CPU threads.
    With ``repetitions`` > 1 the candidates run interleaved (A B A B ...) and each
    observation takes the median step time and peak memory over its repetitions. Pass a
    list as ``trial_results`` to receive every raw :class:`TrialResult`. Starts a local
    Ray when none is running. Returns one :class:`Observation` per candidate, in order.
    """
    if repetitions < 1:
        raise ConfigError("repetitions", repetitions, "must be at least 1")
    settings = TrialSettings(steps, warmup_steps, device, threads_per_worker, seed, results_url)
    configs = _check(candidates, training, settings, cluster)
    spec, _ = _resolve_model(model, training)
    raw: dict[int, list[TrialResult]] = {i: [] for i in range(len(configs))}
    for _rep in range(repetitions):
        for i, cfg in enumerate(configs):
            res = _run(cfg, model, training, settings)
            raw[i].append(res)
            if trial_results is not None:
                trial_results.append(res)
    out = []
    for i, cfg in enumerate(configs):
        runs = raw[i]
        out.append(Observation(
            model=spec, config=cfg, training=training,
            step_time_s=statistics.median(r.step_time_s for r in runs),
            peak_memory_bytes=statistics.median(r.peak_memory_bytes for r in runs),
            source=f"{describe(cfg, spec)} ({device}, median of {len(runs)})"))
    return out


# ---- calibration helpers for trial observations ------------------------------------------
def predicted_trial_memory_bytes(obs: Observation, cluster: ClusterSpec) -> float:
    """Predicted model states + activations + buffers: what a trial's peak measures (the
    cluster's reserved runtime bytes are excluded, as the trial's baseline excludes them)."""
    plan = estimate(obs.config, obs.model, _sized(cluster, obs.config.devices), obs.training)
    return plan.memory.total_bytes - plan.memory.reserved_bytes


def memory_factors(observations: list[Observation], cluster: ClusterSpec) -> dict[int, float]:
    """Measured / predicted trial memory per ZeRO stage (median), plus ``-1``: all stages.

    The analytical memory model counts what the ZeRO paper and DeepSpeed's GPU path
    allocate; on CPU in fp32, DeepSpeed also keeps an fp32 master clone (ZeRO-1/2), flat
    gradient copies, and torch Adam makes step temporaries; one factor per stage absorbs
    these until the formulas model them.
    """
    pairs = [(o.config.zero_stage, o.peak_memory_bytes / predicted_trial_memory_bytes(o, cluster))
             for o in observations if o.peak_memory_bytes]
    if not pairs:
        raise ConfigError("observations", len(observations), "none has a measured peak memory")
    out = {-1: statistics.median(r for _, r in pairs)}
    for stage in sorted({s for s, _ in pairs}):
        out[stage] = statistics.median(r for s, r in pairs if s == stage)
    return out


def _sized(cluster: ClusterSpec, devices: int) -> ClusterSpec:
    if devices <= cluster.total_devices:
        return cluster
    nodes = -(-devices // cluster.devices_per_node)
    return cluster.model_copy(update={"nodes": nodes})


def with_headroom(cluster: ClusterSpec, factor: float = 2.0) -> ClusterSpec:
    """The same predictions with peak rates x ``factor`` and efficiencies / ``factor``.

    A measured CPU spec has efficiency 1.0 at its best measured size, and calibration
    caps efficiencies at 1, so it could only ever slow the model down; this leaves room
    to correct in both directions.
    """
    if factor < 1:
        raise ConfigError("factor", factor, "must be at least 1")
    return cluster.model_copy(update={
        "peak_flops_per_s": {k: v * factor for k, v in cluster.peak_flops_per_s.items()},
        "hbm_bytes_per_s": cluster.hbm_bytes_per_s * factor,
        "matmul_efficiency": [(x, e / factor) for x, e in cluster.matmul_efficiency],
        "memory_efficiency": [(x, e / factor) for x, e in cluster.memory_efficiency],
    })
