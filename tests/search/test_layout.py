"""Package layout: the stage's options load without the heavy stack; no import cycles."""

import subprocess
import sys

import pytest

import forgeline.search as search_pkg

_HEAVY = ("torch", "ray", "deepspeed", "matplotlib", "numpy")


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_options_import_without_the_heavy_stack():
    loaded = _fresh(
        "import sys\n"
        "from forgeline.search.options import StrategyOptions, StrategyResult\n"
        "from forgeline.search import StrategyOptions as again\n"
        "assert again is StrategyOptions\n"
        f"print(','.join(m for m in {_HEAVY!r} if m in sys.modules))")
    assert loaded == ""


@pytest.mark.parametrize("module", ["specs", "presets", "plan", "cost_model", "space",
                                    "ranking", "emitter", "calibration", "reference",
                                    "trials", "stage", "machine", "schedule", "options"])
def test_every_module_imports_first_in_a_fresh_interpreter(module):
    assert _fresh(f"import forgeline.search.{module}; print('ok')") == "ok"


def test_public_names_resolve_and_stay_few():
    assert len(search_pkg.__all__) <= 30
    for name in search_pkg.__all__:
        assert getattr(search_pkg, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        search_pkg.no_such_name  # noqa: B018
