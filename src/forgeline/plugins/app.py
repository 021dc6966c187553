"""A small FastAPI app that serves forgeline's run reports; Airflow mounts it (see
``airflow_plugin``), and it works on its own too.

Routes take an Airflow DAG id and run id, map them to the run folder
(``{root}/runs/{dag_id}__{run_id}``) and serve what the stages wrote there: the report
(or, until it exists, which stages have finished) and ``run.json``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse

from forgeline import storage
from forgeline.errors import ForgelineError
from forgeline.reports import HTML_NAME
from forgeline.runs import RunLayout

RootResolver = Callable[[str, str], str]
"""(dag_id, run_id) → the artifact root URL that run wrote to."""

_PENDING = """<!doctype html><meta charset="utf-8"><title>forgeline: {run}</title>
<body style="font-family: system-ui, sans-serif; margin: 2rem">
<h2>forgeline run <code>{run}</code></h2><p>No report yet. Finished stages: {stages}.</p>
<p>The report appears here when the run's <code>report</code> task has run.</p></body>"""


def _layout(root_for: RootResolver, dag_id: str, run_id: str) -> RunLayout:
    from forgeline.operators.base import run_name

    try:
        return RunLayout(root_for(dag_id, run_id), run_name(dag_id, run_id))
    except ForgelineError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


def create_app(root_for: RootResolver, dependencies: Sequence[Any] = ()) -> FastAPI:
    """The report app; ``dependencies`` guard every route (Airflow passes its auth check)."""
    app = FastAPI(title="forgeline", dependencies=[Depends(d) for d in dependencies])

    @app.get("/dags/{dag_id}/runs/{run_id}/report", response_class=HTMLResponse)
    def report(dag_id: str, run_id: str) -> HTMLResponse:
        layout = _layout(root_for, dag_id, run_id)
        url = storage.join(layout.stage_url("report"), HTML_NAME)
        if storage.exists(url):
            fs, path = storage.filesystem(url)
            return HTMLResponse(fs.cat_file(path).decode())
        stages = sorted(layout.load()["stages"]) if storage.exists(layout.url) else []
        return HTMLResponse(_PENDING.format(
            run=html.escape(layout.run_id),
            stages=html.escape(", ".join(stages) or "none"),
        ))

    @app.get("/dags/{dag_id}/runs/{run_id}/run.json")
    def run_record(dag_id: str, run_id: str) -> JSONResponse:
        layout = _layout(root_for, dag_id, run_id)
        if not storage.exists(layout.run_json_url):
            raise HTTPException(status_code=404, detail=f"no run.json for run {layout.run_id}")
        return JSONResponse(storage.read_json(layout.run_json_url))

    return app
