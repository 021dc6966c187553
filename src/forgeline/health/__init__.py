"""Worker health: signals, a hazard model, predictive checkpoint policies, fault injection.

Names are imported lazily, so that the options model (``forgeline.health.config``) loads
without psutil or numpy.
"""

from __future__ import annotations

from forgeline._lazy import lazy_exports

_EXPORTS = {
    "HealthOptions": "config",
    "FEATURES": "features", "FORECAST_FEATURES": "features", "extract": "features",
    "extract_forecast": "features",
    "HazardModel": "hazard", "LogisticHazard": "hazard", "default_hazard_model": "hazard",
    "job_hazard": "hazard", "load_hazard_model": "hazard", "roc_auc": "hazard",
    "HealthGuard": "guard", "torch_gather": "guard",
    "FAULT_KINDS": "injector", "FaultInjector": "injector", "FaultSpec": "injector",
    "InjectedFault": "injector",
    "HealthMonitor": "monitor",
    "Decision": "policy", "DrainReport": "policy", "PredictivePolicy": "policy",
    "DiskSource": "signals", "MemorySource": "signals", "NvmlSource": "signals",
    "Sample": "signals", "SwapSource": "signals", "ThreadSource": "signals",
    "default_sources": "signals", "nvml_source": "signals",
    "KINDS": "traces", "synthetic_trace": "traces", "training_set": "traces",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
