"""A small FastAPI app that serves forgeline's run reports; Airflow mounts it (see
``airflow_plugin``), and it works on its own too.

Routes take an Airflow DAG id and run id, map them to the run folder
(``{root}/runs/{dag_id}__{run_id}``) and serve what the stages wrote there: the report with
links to every artifact of the run (or, until it exists, the run's state and which stages
have finished), ``run.json`` and each artifact. A run the resolver does not know is a 404.
``TAB_BUNDLE_ROUTE`` serves the ES module that shows the report in Airflow's UI.
Every route sits behind the given dependencies (Airflow's auth); there are no API docs.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response

from forgeline import storage
from forgeline.errors import ForgelineError
from forgeline.reports import HTML_NAME
from forgeline.runs import RunLayout

TAB_BUNDLE_ROUTE = "/report-tab.js"
"""The report tab's ES module (``report_tab.js``), an Airflow UI React plugin."""

RootResolver = Callable[[str, str], str]
"""(dag_id, run_id) → the artifact root URL that run wrote to; ``LookupError`` when there is
no such run."""
StateResolver = Callable[[str, str], str | None]
"""(dag_id, run_id) → the run's state (``running``, ``failed`` …), None when unknown."""

_PENDING = """<!doctype html><meta charset="utf-8"><title>forgeline: {run}</title>
<body style="font-family: system-ui, sans-serif; margin: 2rem">
<h2>forgeline run <code>{run}</code></h2><p>No report yet. Finished stages: {stages}.</p>
<p>{state}</p></body>"""
_STATE_TEXT = {
    "failed": "The run <b>failed</b> before its <code>report</code> task ran; see the failed "
              "task's log in Airflow.",
    None: "The report appears here when the run's <code>report</code> task has run.",
}
_TEXT_TYPES = {".json": "application/json", ".jsonl": "text/plain", ".md": "text/markdown",
               ".html": "text/html", ".png": "image/png", ".txt": "text/plain"}


def _layout(root_for: RootResolver, dag_id: str, run_id: str) -> RunLayout:
    from forgeline.operators.base import run_name

    try:
        return RunLayout(root_for(dag_id, run_id), run_name(dag_id, run_id))
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=f"no run {run_id!r} of {dag_id!r}") from exc
    except ForgelineError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


def _pending_text(state: str | None) -> str:
    if state in _STATE_TEXT:
        return _STATE_TEXT[state]
    return f"The run is <b>{html.escape(state)}</b>. {_STATE_TEXT[None]}"


def _artifact_links(layout: RunLayout) -> str:
    """An "Artifacts" list linking every file of the run (relative to the report route)."""
    from urllib.parse import quote

    from forgeline.reports.artifacts import list_artifacts

    items = "".join(
        f'<li><a href="artifacts/{quote(a.path)}">{html.escape(a.path)}</a> '
        f"({a.size_bytes:,} bytes)</li>" for a in list_artifacts(layout.url))
    return (f'<section style="font-family: system-ui, sans-serif; margin: 2rem">'
            f"<h2>Artifacts</h2><ul>{items}</ul></section>")


def create_app(root_for: RootResolver, dependencies: Sequence[Any] = (),
               state_for: StateResolver | None = None) -> FastAPI:
    """The report app; ``dependencies`` guard every route (Airflow passes its auth check)."""
    app = FastAPI(title="forgeline", dependencies=[Depends(d) for d in dependencies],
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/dags/{dag_id}/runs/{run_id}/report", response_class=HTMLResponse)
    def report(dag_id: str, run_id: str) -> HTMLResponse:
        layout = _layout(root_for, dag_id, run_id)
        url = storage.join(layout.stage_url("report"), HTML_NAME)
        if storage.exists(url):
            fs, path = storage.filesystem(url)
            page = fs.cat_file(path).decode()
            links = _artifact_links(layout)
            if "</body>" in page:
                return HTMLResponse(page.replace("</body>", links + "</body>", 1))
            return HTMLResponse(page + links)
        stages = sorted(layout.load()["stages"]) if storage.exists(layout.url) else []
        state = state_for(dag_id, run_id) if state_for else None
        return HTMLResponse(_PENDING.format(
            run=html.escape(layout.run_id),
            stages=html.escape(", ".join(stages) or "none"), state=_pending_text(state),
        ))

    @app.get(TAB_BUNDLE_ROUTE)
    def report_tab() -> Response:
        from importlib.resources import files

        bundle = files(__package__).joinpath("report_tab.js").read_text(encoding="utf-8")
        return Response(bundle, media_type="text/javascript")

    @app.get("/dags/{dag_id}/runs/{run_id}/artifacts/{path:path}")
    def artifact(dag_id: str, run_id: str, path: str) -> Response:
        """One file of the run, inline (the report tab's links download it)."""
        import posixpath

        layout = _layout(root_for, dag_id, run_id)
        rel = posixpath.normpath(path)
        if rel.startswith(("..", "/")) or rel == ".":
            raise HTTPException(status_code=400, detail=f"path={path!r}: outside the run")
        url = storage.join(layout.url, rel)
        fs, fs_path = storage.filesystem(url)
        if not fs.isfile(fs_path):
            raise HTTPException(status_code=404, detail=f"no artifact {rel!r}")
        media = _TEXT_TYPES.get(posixpath.splitext(rel)[1], "application/octet-stream")
        name = posixpath.basename(rel)
        return Response(fs.cat_file(fs_path), media_type=media,
                        headers={"Content-Disposition": f'inline; filename="{name}"'})

    @app.get("/dags/{dag_id}/runs/{run_id}/run.json")
    def run_record(dag_id: str, run_id: str) -> JSONResponse:
        layout = _layout(root_for, dag_id, run_id)
        if not storage.exists(layout.run_json_url):
            raise HTTPException(status_code=404, detail=f"no run.json for run {layout.run_id}")
        return JSONResponse(storage.read_json(layout.run_json_url))

    return app
