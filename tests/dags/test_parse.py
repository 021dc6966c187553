"""Parsing the end-to-end DAG file in a fresh interpreter is light: no torch, Ray,
DeepSpeed or matplotlib (they load inside the tasks)."""

import json
import os
import subprocess
import sys
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "forgeline_end_to_end.py"
HEAVY = ("torch", "ray", "deepspeed", "matplotlib")

_PROBE = """
import json, runpy, sys, time
started = time.perf_counter()
runpy.run_path(sys.argv[1])
print(json.dumps({"import_s": time.perf_counter() - started,
                  "heavy": sorted(m for m in sys.argv[2:] if m in sys.modules)}))
"""


def test_the_dag_file_imports_no_heavy_engine():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DAG_FILE.parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(DAG_FILE), *HEAVY], env=env,
                         check=True, capture_output=True, text=True, timeout=300)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"DAG file import: {probe['import_s']:.2f} s, heavy modules: {probe['heavy']}")
    assert probe["heavy"] == []
