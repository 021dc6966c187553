"""The small, JSON-serializable result of building a run report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReportResult(BaseModel):
    """Where the report landed and which stages it covers."""

    model_config = ConfigDict(frozen=True)

    html_url: str = Field(description="Self-contained HTML report (plots embedded).")
    markdown_url: str = Field(description="Markdown report; plots referenced by relative name.")
    plot_urls: list[str] = Field(default_factory=list, description="PNG plots written.")
    stages: list[str] = Field(default_factory=list, description="Stages rendered, in order.")
