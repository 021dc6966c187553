"""The stage's options model is importable without torch and types its scheme field."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from pydantic import ValidationError

from forgeline.errors import ConfigError
from forgeline.quantize.config import SCHEMES
from forgeline.quantize.options import QuantizeOptions


def test_options_import_loads_no_heavy_modules():
    code = (
        "import sys; import forgeline.quantize.options; "
        "heavy = {'torch', 'ray', 'deepspeed', 'matplotlib'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scheme_is_an_enum_of_the_known_schemes():
    schema = QuantizeOptions.model_json_schema()["properties"]["scheme"]
    assert sorted(schema["enum"]) == sorted(SCHEMES)
    with pytest.raises(ConfigError, match="scheme='int3'"):
        QuantizeOptions(scheme="int3")
    with pytest.raises(ValidationError, match="scheme"):
        QuantizeOptions.model_validate({"scheme": "int3"})


def test_stage_module_reexports_the_same_models():
    from forgeline.quantize import stage

    assert stage.QuantizeOptions is QuantizeOptions
    params = list(inspect.signature(stage.quantize_stage).parameters)
    assert params == ["options", "model_url", "manifest_url", "output_url"]
