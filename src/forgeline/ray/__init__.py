"""Ray Train adapters: worker-side helpers and controller-side ``UserCallback``s."""

from forgeline.ray.metrics import MetricsLogger, read_metrics

__all__ = ["MetricsLogger", "read_metrics"]
