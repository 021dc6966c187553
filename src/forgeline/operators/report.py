"""ReportOperator: the run's HTML/Markdown report with plots."""

from __future__ import annotations

from forgeline import pipeline
from forgeline.operators.base import StageOperator
from forgeline.reports import ReportResult
from forgeline.runs import RunLayout


class ReportOperator(StageOperator):
    """Build ``report.html`` / ``report.md`` from ``run.json`` and ``metrics.jsonl``."""

    stage = "report"

    def run(self, layout: RunLayout, options: object) -> ReportResult:
        return pipeline.report(layout)
