"""Run report: HTML (self-contained) + Markdown + PNG plots, built from a run's stored results.

>>> result = build_report("file:///data/forgeline", "run-1")   # doctest: +SKIP
>>> result.html_url                                             # doctest: +SKIP
'file:///data/forgeline/runs/run-1/report/report.html'
"""

from __future__ import annotations

from forgeline.reports.build import HTML_NAME, MARKDOWN_NAME, build_report, report_url
from forgeline.reports.plots import LOSS_PLOT_NAME
from forgeline.reports.result import ReportResult

__all__ = [
    "HTML_NAME",
    "LOSS_PLOT_NAME",
    "MARKDOWN_NAME",
    "ReportResult",
    "build_report",
    "report_url",
]
