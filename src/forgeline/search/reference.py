"""Published Megatron-LM measurements on A100-80GB (DGX A100, Selene), as data.

* Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using
  Megatron-LM", SC'21, Table 1: weak scaling from 1.7B to 1T parameters; FLOPs counted
  with their eq. (3) (activation recomputation); mixed precision; s = 2048, V = 51,200.
* Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models",
  MLSys'23 (arXiv:2205.05198): per-iteration times with full recomputation and with
  sequence parallelism + selective recomputation (as collected in Calculon's validation,
  Isaev et al. SC'23).

The two are disjoint runs of different Megatron versions (2021 vs 2022), so one can
calibrate on the second and test on the first.
"""

from __future__ import annotations

from typing import NamedTuple

from forgeline.search.calibration import Observation
from forgeline.search.plan import ParallelConfig
from forgeline.search.specs import ModelSpec, TrainingSpec

SEQ_LEN = 2048
VOCAB = 51200


class TableRow(NamedTuple):
    """One row of Narayanan et al. Table 1."""

    params_billion: float
    heads: int
    hidden: int
    layers: int
    tensor_parallel: int
    pipeline_parallel: int
    gpus: int
    batch: int
    achieved_tflops_per_gpu: float

    @property
    def data_parallel(self) -> int:
        return self.gpus // (self.tensor_parallel * self.pipeline_parallel)


NARAYANAN_TABLE1: tuple[TableRow, ...] = (
    TableRow(1.7, 24, 2304, 24, 1, 1, 32, 512, 137),
    TableRow(3.6, 32, 3072, 30, 2, 1, 64, 512, 138),
    TableRow(7.5, 32, 4096, 36, 4, 1, 128, 512, 142),
    TableRow(18.4, 48, 6144, 40, 8, 1, 256, 1024, 135),
    TableRow(39.1, 64, 8192, 48, 8, 2, 512, 1536, 138),
    TableRow(76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140),
    TableRow(145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148),
    TableRow(310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155),
    TableRow(529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163),
    TableRow(1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163),
)


class KorthikantiRun(NamedTuple):
    """One configuration of Korthikanti et al. with both measured step times."""

    name: str
    hidden: int
    heads: int
    layers: int
    tensor_parallel: int
    pipeline_parallel: int
    batch: int
    micro_batch: int
    virtual_stages: int
    full_recompute_step_s: float
    sp_selective_step_s: float


KORTHIKANTI_2022: tuple[KorthikantiRun, ...] = (
    KorthikantiRun("22B", 6144, 64, 48, 8, 1, 4, 4, 1, 1.42, 1.10),
    KorthikantiRun("175B", 12288, 96, 96, 8, 8, 64, 1, 3, 18.13, 13.75),
    KorthikantiRun("530B", 20480, 128, 105, 8, 35, 280, 1, 3, 49.05, 37.83),
    KorthikantiRun("1T", 25600, 160, 128, 8, 64, 512, 1, 1, 94.42, 71.49),
)


def megatron_model(name: str, hidden: int, heads: int, layers: int) -> ModelSpec:
    """A GPT of the Megatron papers: fp16 weights, fp32 main gradients (Megatron's DDP)."""
    return ModelSpec(name=name, layers=layers, hidden=hidden, heads=heads, seq_len=SEQ_LEN,
                     vocab=VOCAB, param_dtype="fp16", grad_dtype="fp32")


def megatron_training(batch: int) -> TrainingSpec:
    """fp16 Adam; Megatron (2021-22) reduces gradients after the pipeline flush, unoverlapped."""
    return TrainingSpec(global_batch_size=batch, precision="fp16", overlap_grad_reduce=False,
                        framework="megatron-lm-2021")


def korthikanti_observations() -> list[Observation]:
    """The eight measured runs as calibration observations."""
    out = []
    for run in KORTHIKANTI_2022:
        model = megatron_model(run.name, run.hidden, run.heads, run.layers)
        training = megatron_training(run.batch)
        for recompute, sp, step_s in (("full", False, run.full_recompute_step_s),
                                      ("selective", True, run.sp_selective_step_s)):
            config = ParallelConfig(
                tensor_parallel=run.tensor_parallel, pipeline_parallel=run.pipeline_parallel,
                data_parallel=1, virtual_stages=run.virtual_stages,
                micro_batch_size=run.micro_batch, recompute=recompute, sequence_parallel=sp)
            out.append(Observation(model=model, config=config, training=training,
                                   step_time_s=step_s,
                                   source=f"Korthikanti et al. {run.name} {recompute}"
                                          f"{' + SP' if sp else ''}"))
    return out
