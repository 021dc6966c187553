"""``make demo``: run the end-to-end DAG through Airflow (``dag.test()``) on the embedded
defaults and say where the trained model and the report are.

Expects ``AIRFLOW_HOME`` with a migrated metastore and ``AIRFLOW__CORE__DAGS_FOLDER`` pointing
at ``dags/`` (the Makefile sets both up).
"""

from __future__ import annotations

import json
import sys
import time

DAG_ID = "forgeline_end_to_end"


def main(argv: list[str] | None = None) -> int:
    from airflow.dag_processing.dagbag import DagBag

    from forgeline.operators import run_name
    from forgeline.runs import RunLayout
    from forgeline.storage import filesystem

    run_conf = json.loads(argv[0]) if argv else {}
    started = time.perf_counter()
    bag = DagBag()
    if bag.import_errors:
        print(f"DAG import errors: {bag.import_errors}", file=sys.stderr)
        return 1
    dag = bag.get_dag(DAG_ID)
    dag_run = dag.test(run_conf=run_conf or None)
    if str(dag_run.state) != "success":
        print(f"DAG run {dag_run.run_id} ended {dag_run.state}", file=sys.stderr)
        return 1
    root = (dag_run.conf or {}).get("artifact_root") or dag.params["artifact_root"]
    layout = RunLayout(root, run_name(DAG_ID, dag_run.run_id))
    stages = layout.load()["stages"]
    train, report = stages["train"], stages["report"]

    def local(url: str) -> str:
        return filesystem(url)[1] if url.startswith("file://") else url

    print()
    print(f"forgeline demo finished in {time.perf_counter() - started:.0f} s "
          f"(DAG {DAG_ID}, run {dag_run.run_id})")
    print(f"  validation perplexity: {train['val_ppl_before']:.1f} untrained → "
          f"{train['val_ppl_after']:.2f} trained "
          f"({train['workers']} Ray Train workers, DeepSpeed ZeRO-{train['zero_stage']})")
    print(f"  trained model:   {local(train['model_url'])}")
    q = stages["quantize"]
    mix = ", ".join(f"{n} × {s}" for s, n in q["scheme_counts"].items())
    print(f"  quantized ({mix} layers; {q['size_ratio']:.2f}× smaller): validation perplexity "
          f"{q['val_ppl_float']:.2f} → {q['val_ppl_quantized']:.2f} "
          f"({100 * q['rel_ppl_increase']:+.2f} %, on the quantize stage's held-out windows)")
    print(f"  quantized model: {local(q['model_url'])}")
    print(f"  report:          {local(report['html_url'])}")
    print(f"                   {local(report['markdown_url'])}")
    print(f"  run record:      {local(layout.run_json_url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
