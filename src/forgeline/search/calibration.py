"""Correct a cluster's efficiency constants from measured step times.

Three factors are fitted: ``compute_scale`` multiplies the matmul and memory efficiency
curves, ``comm_scale`` the achieved link fractions (each capped at 1), and
``framework_scale`` multiplies the ZeRO runtime's bookkeeping time (its copy rate is
divided by it, its per-tensor hook cost multiplied). They are found by coordinate
descent (golden-section search in log space) minimising the mean squared log error of
predicted vs measured step time; a factor no observation depends on stays 1. The result
keeps every observation's measured and predicted values so the fit can be audited.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from forgeline.errors import ConfigError
from forgeline.search.cost_model import estimate
from forgeline.search.plan import ParallelConfig
from forgeline.search.specs import ClusterSpec, ModelSpec, TrainingSpec


class Observation(BaseModel):
    """One measured run: what ran and how long a step took (and optionally peak memory)."""

    model: ModelSpec
    config: ParallelConfig
    training: TrainingSpec
    step_time_s: float = Field(gt=0, description="measured seconds per optimizer step")
    peak_memory_bytes: float | None = Field(None, gt=0, description="measured peak per device")
    source: str = Field("", description="where the measurement comes from")
    cluster: ClusterSpec | None = Field(None, description="the system it ran on, when it "
                                        "differs from the one being calibrated; the fitted "
                                        "factors scale it the same way")


class CalibrationRow(BaseModel):
    source: str
    measured_step_s: float
    predicted_step_s_before: float
    predicted_step_s_after: float
    measured_memory_bytes: float | None
    predicted_memory_bytes: float


class Calibration(BaseModel):
    """The corrected cluster plus the evidence for it. :meth:`apply` carries the fitted
    factors to any other cluster: another node count, or another preset."""

    cluster: ClusterSpec
    compute_scale: float
    comm_scale: float
    framework_scale: float = Field(1.0, description="multiplies the ZeRO bookkeeping time")
    step_mape_before_pct: float
    step_mape_after_pct: float
    memory_mape_pct: float | None = Field(None, description="over rows with measured memory")
    rows: list[CalibrationRow]

    def apply(self, cluster: ClusterSpec | None = None, nodes: int | None = None) -> ClusterSpec:
        """``cluster`` (default: the calibrated one) with the fitted factors applied, resized
        to ``nodes`` when given; validated like any spec."""
        if nodes is not None and nodes < 1:
            raise ConfigError("nodes", nodes, "must be at least 1")
        if cluster is None:
            base = self.cluster
        else:
            base = scaled_cluster(cluster, self.compute_scale, self.comm_scale,
                                  self.framework_scale)
        return base if nodes is None else ClusterSpec(**{**base.model_dump(), "nodes": nodes})


def scaled_cluster(cluster: ClusterSpec, compute_scale: float = 1.0,
                   comm_scale: float = 1.0, framework_scale: float = 1.0) -> ClusterSpec:
    """``cluster`` with its efficiency curves (or, where set, its measured matmul peak
    fractions) and link fractions multiplied (capped at 1) and its ZeRO bookkeeping time
    multiplied by ``framework_scale``."""
    for name, value in (("compute_scale", compute_scale), ("comm_scale", comm_scale),
                        ("framework_scale", framework_scale)):
        if value <= 0:
            raise ConfigError(name, value, "must be positive")
    fractions = cluster.matmul_peak_fraction
    return cluster.model_copy(update={
        # where the curve's ceiling is a measured fraction per precision, that is scaled
        "matmul_efficiency": cluster.matmul_efficiency if fractions else [
            (x, min(1.0, e * compute_scale)) for x, e in cluster.matmul_efficiency],
        "matmul_peak_fraction": {k: min(1.0, f * compute_scale) for k, f in fractions.items()},
        "memory_efficiency": [(x, min(1.0, e * compute_scale))
                              for x, e in cluster.memory_efficiency],
        "intra_node_efficiency": min(1.0, cluster.intra_node_efficiency * comm_scale),
        "inter_node_efficiency": min(1.0, cluster.inter_node_efficiency * comm_scale),
        "zero_copy_bytes_per_s": cluster.zero_copy_rate / framework_scale,
        "zero3_hook_s_per_tensor": cluster.zero3_hook_s_per_tensor * framework_scale,
    })


def _sized(cluster: ClusterSpec, devices: int) -> ClusterSpec:
    nodes = max(cluster.nodes, math.ceil(devices / cluster.devices_per_node))
    return cluster if nodes == cluster.nodes else cluster.model_copy(update={"nodes": nodes})


def _predict(obs: list[Observation], cluster: ClusterSpec,
             scales: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> list[tuple[float, float]]:
    out = []
    for o in obs:
        own = cluster if o.cluster is None else scaled_cluster(o.cluster, *scales)
        plan = estimate(o.config, o.model, _sized(own, o.config.devices), o.training)
        out.append((plan.step_time_s, plan.memory.total_bytes))
    return out


def _loss(obs: list[Observation], cluster: ClusterSpec,
          scales: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
    preds = _predict(obs, cluster, scales)
    return sum(math.log(p / o.step_time_s) ** 2 for (p, _), o in zip(preds, obs, strict=True))


def _golden(f, lo: float, hi: float, iters: int = 24) -> float:
    """Minimise f on [lo, hi] (log-scale argument) by golden-section search."""
    g = (math.sqrt(5) - 1) / 2
    a, b = math.log(lo), math.log(hi)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(iters):
        if fc <= fd:  # ties (a capped plateau) move toward the smaller factor
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(math.exp(d))
    return math.exp((a + b) / 2)


def _mape(pairs: list[tuple[float, float]]) -> float:
    return 100.0 * sum(abs(p - m) / m for p, m in pairs) / len(pairs)


def _fit(f, lo: float, hi: float, current: float) -> float:
    """Golden-section fit of one factor; ``current`` when f does not depend on it."""
    if math.isclose(f(lo), f(hi), rel_tol=1e-12, abs_tol=1e-15):
        return current
    return _golden(f, lo, hi)


def calibrate(observations: list[Observation], cluster: ClusterSpec,
              fit_comm: bool = True, rounds: int = 3,
              fit_framework: bool = True) -> Calibration:
    """Fit ``compute_scale`` (and ``comm_scale`` / ``framework_scale`` unless ``fit_comm`` /
    ``fit_framework`` is False) to the measured step times; every observation must be a
    valid configuration."""
    if not observations:
        raise ConfigError("observations", [], "need at least one measured run")
    for o in observations:
        o.config.check(o.model, _sized(o.cluster or cluster, o.config.devices), o.training)
    scales = [1.0, 1.0, 1.0]  # compute, comm, framework
    top = 1.0 / max(cluster.intra_node_efficiency, cluster.inter_node_efficiency)
    bounds = [(0.2, 5.0), (0.05, top), (0.05, 20.0)]
    fitted_here = [True, fit_comm, fit_framework]

    def loss_at(i: int, x: float) -> float:
        trial = list(scales)
        trial[i] = x
        return _loss(observations, scaled_cluster(cluster, *trial), tuple(trial))

    for _ in range(rounds if (fit_comm or fit_framework) else 1):
        for i in range(3):
            if fitted_here[i]:
                scales[i] = _fit(lambda x, i=i: loss_at(i, x), *bounds[i], scales[i])
    cs, ms, fs = scales
    fitted = scaled_cluster(cluster, cs, ms, fs)
    before = _predict(observations, cluster)
    after = _predict(observations, fitted, (cs, ms, fs))
    rows = [CalibrationRow(source=o.source, measured_step_s=o.step_time_s,
                           predicted_step_s_before=b[0], predicted_step_s_after=a[0],
                           measured_memory_bytes=o.peak_memory_bytes,
                           predicted_memory_bytes=a[1])
            for o, b, a in zip(observations, before, after, strict=True)]
    mem = [(r.predicted_memory_bytes, r.measured_memory_bytes) for r in rows
           if r.measured_memory_bytes]
    return Calibration(
        cluster=fitted.model_copy(update={
            "notes": f"{cluster.notes}; calibrated on {len(observations)} runs "
                     f"(compute x{cs:.3f}, comm x{ms:.3f}, ZeRO bookkeeping x{fs:.3f})"}),
        compute_scale=cs, comm_scale=ms, framework_scale=fs,
        step_mape_before_pct=_mape([(b[0], o.step_time_s) for b, o in
                                    zip(before, observations, strict=True)]),
        step_mape_after_pct=_mape([(r.predicted_step_s_after, r.measured_step_s) for r in rows]),
        memory_mape_pct=_mape(mem) if mem else None,
        rows=rows,
    )
