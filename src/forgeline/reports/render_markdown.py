"""The Markdown report; plots are referenced by relative file name."""

from __future__ import annotations

from forgeline.reports.document import ReportDocument
from forgeline.reports.formatting import human_bytes
from forgeline.reports.sections import Section


def md_text(value: str) -> str:
    """Make a value safe inside a Markdown table cell (no raw HTML, no column breaks)."""
    return (
        value.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def _code(value: str) -> str:
    safe = value.replace("`", "'")
    return f"`{safe}`"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_text(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _section(sec: Section, level: int) -> list[str]:
    lines = [f"**{md_text(fact)}**\n" for fact in sec.facts]
    for table in sec.tables:
        lines += [f"{'#' * level} {md_text(table.title)}", ""]
        lines += _table(("field", "value"), table.rows)
    lines += [f"![{md_text(img.alt)}](../{img.path})\n" for img in sec.images]
    return lines


def render_markdown(doc: ReportDocument, loss_plot_name: str | None) -> str:
    """Render ``doc`` as Markdown; ``loss_plot_name`` is the PNG beside the report, if any."""
    stages = ", ".join(doc.stages) if doc.stages else "none recorded"
    lines = [
        f"# forgeline run {_code(doc.run_id)}",
        "",
        f"Root {_code(doc.root)} · generated {doc.generated_at} · stages: {md_text(stages)}",
        "",
        "## Dataset",
        "",
    ]
    lines += _section(doc.dataset, 3) if doc.dataset else ["_No prepare stage recorded._", ""]
    lines += ["## Training", ""]
    lines += _section(doc.training, 3) if doc.training else ["_No train stage recorded._", ""]
    lines += ["### Training curve", ""]
    if loss_plot_name:
        lines += [f"![Training loss vs step]({loss_plot_name})", ""]
    if doc.curve.note:
        lines += [f"_{md_text(doc.curve.note)}_", ""]
    if doc.others:
        lines += ["## Other stages", ""]
        for sec in doc.others:
            lines += [f"### Stage {_code(sec.title)}", ""] + _section(sec, 4)
    lines += ["## Artifacts", ""]
    if doc.artifacts:
        rows = [
            (f"`{a.path}`", human_bytes(a.size_bytes), f"{a.size_bytes:,}") for a in doc.artifacts
        ]
        lines += _table(("path", "size", "bytes"), rows)
        total = doc.artifacts_total_bytes
        lines += [
            f"{len(doc.artifacts)} files, {human_bytes(total)} ({total:,} bytes), "
            f"under {_code(doc.run_url)}",
            "",
        ]
    else:
        lines += [f"_No files under {_code(doc.run_url)}._", ""]
    return "\n".join(lines)
