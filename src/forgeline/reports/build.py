"""``build_report``: read a run from storage, write its HTML + Markdown report and plots."""

from __future__ import annotations

from forgeline import storage
from forgeline.reports.document import REPORT_STAGE, build_document
from forgeline.reports.plots import LOSS_PLOT_NAME, loss_plot_png
from forgeline.reports.render_html import render_html
from forgeline.reports.render_markdown import render_markdown
from forgeline.reports.result import ReportResult
from forgeline.runs import RunLayout

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"


def report_url(root: str, run_id: str) -> str:
    """The folder a run's report is written to: ``{root}/runs/{run_id}/report``."""
    return RunLayout(root, run_id).stage_url(REPORT_STAGE)


def build_report(root: str, run_id: str) -> ReportResult:
    """Write ``report.html``, ``report.md`` and ``train_loss.png`` under the run's report folder.

    Fails with ``StorageError`` (field ``run_id``) before writing anything when the
    run has no ``run.json``. Every file is written atomically; the HTML goes last.
    """
    layout = RunLayout(root, run_id)
    doc = build_document(layout)
    out = layout.stage_url(REPORT_STAGE)
    plot_url = storage.join(out, LOSS_PLOT_NAME)

    png = None if doc.curve.empty else loss_plot_png(doc.curve)
    if png is not None:
        storage.write_bytes_atomic(plot_url, png)
    else:
        _remove_stale(plot_url)

    markdown_url = storage.join(out, MARKDOWN_NAME)
    html_url = storage.join(out, HTML_NAME)
    plot_name = LOSS_PLOT_NAME if png is not None else None
    storage.write_bytes_atomic(markdown_url, render_markdown(doc, plot_name).encode("utf-8"))
    storage.write_bytes_atomic(html_url, render_html(doc, png).encode("utf-8"))
    return ReportResult(
        html_url=html_url,
        markdown_url=markdown_url,
        plot_urls=[plot_url] if png is not None else [],
        stages=doc.stages,
    )


def _remove_stale(url: str) -> None:
    """Drop a plot left by an earlier build, so the folder never shows a curve the report lacks."""
    fs, path = storage.filesystem(url)
    if fs.exists(path):
        fs.rm_file(path)
