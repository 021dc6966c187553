"""Options of worker health monitoring and predictive checkpointing (torch-free)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgeline.errors import ConfigError


class HealthOptions(BaseModel):
    """Health signals per worker, a hazard model and the predictive checkpoint policy.

    Off by default. When on, every worker samples its signals, the hazard model turns them
    into the probability of a failure within ``horizon_steps``, and the policy saves a
    proactive checkpoint above ``threshold`` (or just before memory or disk is forecast to run
    out), shortens the interval as the hazard grows (down to ``min_interval_steps``; never
    longer than Young/Daly on the observed MTBF, nor than the checkpoint interval unless
    ``max_interval_steps`` allows it) and reports a suspect node for draining.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, title="Health")

    enabled: bool = Field(False, description="Monitor worker health and checkpoint ahead of a "
                          "predicted failure.")
    sample_every_steps: int = Field(1, ge=1, description="Evaluate the hazard (read host "
                                    "signals, exchange hazards, decide) every N steps; the "
                                    "loop's own step time, loss and gradient norm are kept "
                                    "every step.")
    sample_interval_s: float = Field(0.05, ge=0.0, description="Read host signals (psutil, "
                                     "NVML) at most every this many seconds, reusing the last "
                                     "reading between; 0: at every evaluation.")
    window_steps: int = Field(32, ge=8, le=4096, description="Samples the hazard model looks "
                              "at (the first half is the baseline).")
    horizon_steps: int = Field(20, ge=1, description="The hazard is the probability of a "
                               "failure within this many steps.")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Job hazard that triggers a "
                             "proactive checkpoint.")
    cooldown_steps: int = Field(10, ge=1, description="Minimum steps from any checkpoint "
                                "to a (further) proactive one.")
    min_interval_steps: int = Field(10, ge=1, description="Shortest checkpoint interval the "
                                    "adaptive policy uses.")
    max_interval_steps: int | None = Field(
        None, ge=1, description="Longest interval the adaptive policy uses, when the hazard "
        "is low; None: the checkpoint interval. Set it above to let a calm run checkpoint at "
        "Young/Daly's interval on the observed MTBF when that is longer.")
    imminent_steps: int = Field(4, ge=0, description="Save when memory or disk is forecast "
                                "to run out (at its recent growth) within this many steps "
                                "after the next evaluation (sample_every_steps on), inside "
                                "the cooldown too: the margin for the forecast's error. A "
                                "hazard that such a forecast explains waits for that save.")
    drain_threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Worker hazard above "
                                   "which its node is reported for draining.")
    drain_after_samples: int = Field(3, ge=1, description="Consecutive evaluations above "
                                     "drain_threshold before a node is reported.")
    mtbf_s: float | None = Field(None, gt=0, description="Known mean time between failures "
                                 "of the job; None: read the observed one (failure_stats.json).")
    memory_limit_bytes: int | None = Field(
        None, ge=1, description="Memory limit of one worker process (its RSS is watched); "
        "None: the container's cgroup limit, or the host's memory.")
    disk_path: str | None = Field(None, description="Local folder whose free space is "
                                  "watched; None: the checkpoint folder when local, else /tmp.")
    disk_quota_bytes: int | None = Field(None, ge=1, description="A quota on disk_path: free "
                                         "space is min(disk free, quota − folder size).")
    nvml: bool = Field(True, description="Read GPU health through NVML when nvidia-ml-py "
                       "imports and a GPU is present (skipped otherwise).")
    model: str | None = Field(None, description="A user hazard model, 'package.module:factory' "
                              "returning a HazardModel; None: forgeline's rules + logistic.")

    @model_validator(mode="after")
    def _consistent(self) -> HealthOptions:
        if self.drain_threshold < self.threshold:
            raise ConfigError("health.drain_threshold", self.drain_threshold,
                              f"must be ≥ health.threshold ({self.threshold})")
        if self.horizon_steps >= self.window_steps * 4:
            raise ConfigError("health.horizon_steps", self.horizon_steps,
                              f"must be < 4 × health.window_steps ({self.window_steps})")
        if self.max_interval_steps is not None \
                and self.max_interval_steps < self.min_interval_steps:
            raise ConfigError("health.max_interval_steps", self.max_interval_steps,
                              f"must be ≥ health.min_interval_steps ({self.min_interval_steps})")
        if self.model is not None and ":" not in self.model:
            raise ConfigError("health.model", self.model, "use 'package.module:factory'")
        return self
