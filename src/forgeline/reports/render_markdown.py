"""The Markdown report; plots are referenced by relative file name."""

from __future__ import annotations

from forgeline.reports.cards import Card
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
    for title, text in sec.code:
        lines += [f"{'#' * level} {md_text(title)}", "", "```json", text, "```", ""]
    lines += [f"![{md_text(img.alt)}](../{img.path})\n" for img in sec.images]
    return lines


def _card(card: Card, loss_plot_name: str | None, doc: ReportDocument) -> list[str]:
    lines = [f"### {md_text(card.title)}", "", f"**{md_text(card.headline)}**", ""]
    lines += _table(("", ""), card.rows)
    if card.grid:
        lines += _table(card.grid.header, card.grid.rows)
    lines += [f"- {md_text(note)}" for note in card.notes] + ([""] if card.notes else [])
    if card.plot and loss_plot_name:
        lines += [f"![Training loss vs step]({loss_plot_name})", ""]
    if card.plot and doc.curve.note:
        lines += [f"_{md_text(doc.curve.note)}_", ""]
    return lines


def _details(title: str, body: list[str]) -> list[str]:
    """A collapsed block (GitHub-flavoured Markdown renders the HTML ``<details>``)."""
    return [f"<details><summary>{md_text(title)}</summary>", "", *body, "</details>", ""]


def render_markdown(doc: ReportDocument, loss_plot_name: str | None) -> str:
    """Render ``doc`` as Markdown; ``loss_plot_name`` is the PNG beside the report, if any."""
    stages = ", ".join(doc.stages) if doc.stages else "none recorded"
    lines = [
        f"# forgeline run {_code(doc.run_id)}",
        "",
        f"Root {_code(doc.root)} · generated {doc.generated_at} · stages: {md_text(stages)}",
        "",
        "## What each stage did",
        "",
    ]
    for card in doc.cards:
        lines += _card(card, loss_plot_name, doc)
    if not doc.cards:
        lines += ["_No stage results recorded yet._", ""]
    lines += ["## Details", ""]
    lines += _details("Dataset", _section(doc.dataset, 4) if doc.dataset
                      else ["_No prepare stage recorded._", ""])
    training = _section(doc.training, 4) if doc.training else ["_No train stage recorded._", ""]
    if loss_plot_name:
        training += [f"![Training loss vs step]({loss_plot_name})", ""]
    lines += _details("Training", training)
    for sec in doc.others:
        lines += _details(f"Stage {sec.stage}", _section(sec, 4))
    if doc.artifacts:
        rows = [
            (f"`{a.path}`", human_bytes(a.size_bytes), f"{a.size_bytes:,}") for a in doc.artifacts
        ]
        total = doc.artifacts_total_bytes
        body = _table(("path", "size", "bytes"), rows) + [
            f"{len(doc.artifacts)} files, {human_bytes(total)} ({total:,} bytes), "
            f"under {_code(doc.run_url)}", ""]
    else:
        body = [f"_No files under {_code(doc.run_url)}._", ""]
    lines += _details(f"Artifacts ({len(doc.artifacts)} files)", body)
    return "\n".join(lines)
