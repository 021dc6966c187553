"""The strategy-search pipeline stage: pick how to run the training stage, and say why.

It describes the training stage's model (a ``DecoderLM`` preset at the dataset's window)
as a ``ModelSpec``, searches the cluster, writes the ranked plans to ``plan.json``, and
returns what the training stage runs as is: a DeepSpeed config, a worker count and the
recompute choice.
"""

from __future__ import annotations

import time

from forgeline import storage
from forgeline.errors import ConfigError
from forgeline.search.emitter import emit, for_cpu
from forgeline.search.machine import this_machine_cpu
from forgeline.search.options import PLAN_FILE, THIS_MACHINE, StrategyOptions, StrategyResult
from forgeline.search.space import SearchSpace
from forgeline.search.specs import ClusterSpec, ModelSpec, TrainingSpec

__all__ = ["PLAN_FILE", "THIS_MACHINE", "StrategyOptions", "StrategyResult", "model_spec",
           "plan_strategy"]

def _cluster(options: StrategyOptions) -> ClusterSpec:
    if options.cluster == THIS_MACHINE:
        if options.nodes != 1:
            raise ConfigError("nodes", options.nodes, f"'{THIS_MACHINE}' is one node")
        return this_machine_cpu(options.devices_per_node)
    return ClusterSpec.preset(options.cluster, nodes=options.nodes,
                              devices_per_node=options.devices_per_node)


def model_spec(model_size: str, seq_len: int, precision: str,
               vocab_size: int | None = None) -> ModelSpec:
    """The training stage's ``DecoderLM`` preset as a ``ModelSpec``, by inspection."""
    from forgeline.train.model import DecoderLM, ModelConfig

    vocab = {"vocab_size": vocab_size} if vocab_size else {}
    module = DecoderLM(ModelConfig.preset(model_size, seq_len=seq_len, **vocab))  # type: ignore[arg-type]
    dtype = precision if precision in ("fp32", "fp16") else "bf16"
    spec = ModelSpec.from_module(module, seq_len=seq_len, name=f"DecoderLM-{model_size}")
    return spec.model_copy(update={"param_dtype": dtype, "grad_dtype": dtype})


def plan_strategy(options: StrategyOptions, output_url: str) -> StrategyResult:
    """Search data-parallel plans the training stage can run (ZeRO, micro-batch, accumulation,
    full recompute) on ``options.cluster``; write every ranked plan; return the best."""
    if options.seq_len is None:
        raise ConfigError("seq_len", None, "needed: the training window in tokens")
    storage.ensure_writable(output_url, "output_url")
    cluster = _cluster(options)
    seq_len = options.seq_len
    on_cpu = options.cluster == THIS_MACHINE
    # Volta has no bf16: such presets train in fp16
    precision = "fp32" if on_cpu else ("bf16" if "bf16" in cluster.peak_flops_per_s else "fp16")
    model = model_spec(options.model_size, seq_len, precision, options.vocab_size)
    if options.model is not None:  # the training stage's own model (Hugging Face, factory)
        from forgeline.train.models import trained_model_spec

        model = trained_model_spec(options.model, seq_len, precision, options.vocab_size)
    training = TrainingSpec(global_batch_size=options.global_batch_size, precision=precision,
                            learning_rate=options.lr)
    space = SearchSpace(
        tensor_parallel=[1], pipeline_parallel=[1], sequence_parallel=[False],
        data_parallel=[options.workers] if options.workers else None,
        recompute=["none", "full"] if options.activation_checkpointing_allowed else ["none"],
        offload=["none"] if on_cpu else ["none", "optimizer", "parameters"],
        zero_stages=options.zero_stages or [0, 1, 2, 3],
        micro_batch_sizes=options.micro_batch_sizes,
    )
    started = time.perf_counter()
    from forgeline.search.ranking import search

    found = search(model, cluster, training, top_k=options.top_k, space=space)
    if not found.feasible:
        raise ConfigError("cluster", options.cluster, f"no plan fits: {found.reason}")
    best = found.plans[0]
    emitted = emit(best, model, training)
    ds = for_cpu(emitted.deepspeed_config) if on_cpu else emitted.deepspeed_config
    plan_url = storage.join(output_url, PLAN_FILE)
    storage.write_json_atomic(plan_url, {
        "search": found.model_dump(mode="json"),
        "emitted": emitted.model_dump(mode="json"),
    })
    return StrategyResult(
        plan_url=plan_url,
        cluster=cluster.name,
        devices=cluster.total_devices,
        num_workers=emitted.num_workers,
        deepspeed_config=ds,
        activation_checkpointing=emitted.activation_checkpointing != "none",
        zero_stage=best.config.zero_stage,
        micro_batch_size=best.config.micro_batch_size,
        grad_accum_steps=best.gradient_accumulation_steps,
        predicted_step_s=best.step_time_s,
        predicted_memory_bytes=int(best.memory.total_bytes),
        bound_by=best.bound_by,
        candidates_evaluated=found.candidates_evaluated,
        search_s=round(time.perf_counter() - started, 4),
        ranking=[
            {"config": p.config.model_dump(mode="json"), "step_time_s": p.step_time_s,
             "memory_bytes": int(p.memory.total_bytes), "bound_by": p.bound_by}
            for p in found.plans
        ],
    )
