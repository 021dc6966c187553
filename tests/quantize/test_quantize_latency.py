"""The latency objective: measured, reported, and the returned model kept no slower here."""

from __future__ import annotations

import torch
from torch import nn

from forgeline.quantize import QuantizeConfig, quantize_model


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256)).eval()


def test_slow_kernels_fall_back_to_float_and_say_why():
    model = _mlp()
    batches = [torch.randn(8, 256) for _ in range(2)]
    # int4 decoded on every call (the reference backend) always loses to the float matmul
    cfg = QuantizeConfig(scheme="int4_rtn", group_size=64, backend="dequant",
                         latency={"repeats": 3, "fallback": ["fp32"], "tolerance": 0.5})
    qmodel, report = quantize_model(model, cfg, batches)
    lat = report.latency
    assert lat.checked and set(lat.first_ratio) == {"b1", "b32"}
    assert set(lat.float_ms) == set(lat.quantized_ms) == {"b1", "b32"}
    if min(lat.first_ratio.values()) > 1.5:  # clearly slower: layers must have moved
        assert lat.changes and all("→ fp32" in why for why in lat.changes.values())
        by_name = {r.name: r.scheme for r in report.layers}
        assert all(by_name[n] == "fp32" for n in lat.changes)
        assert set(qmodel.layers()) == {n for n, s in by_name.items() if s != "fp32"}
    assert lat.met is not None


def test_objective_off_and_no_inputs_are_reported():
    model = _mlp()
    _, off = quantize_model(model, QuantizeConfig(latency={"objective": "off"}),
                            [torch.randn(4, 256)])
    assert off.latency is None and {r.scheme for r in off.layers} == {"int8_wo"}
    _, unchecked = quantize_model(model, QuantizeConfig())
    assert unchecked.latency.checked is False and "no calibration" in unchecked.latency.notes[0]


def test_int8_weight_only_holds_less_memory_than_float():
    model = _mlp()
    x = torch.randn(4, 256)
    qmodel, report = quantize_model(model, QuantizeConfig(latency={"objective": "off"}), [x])
    with torch.no_grad():
        qmodel(x)  # after a forward: no decoded fp32 copy is kept by default
    assert qmodel.resident_bytes() <= 0.3 * report.float_resident_bytes
    assert report.backend == "dequant×2"
    qmodel.set_backend("dequant_cached")  # the explicit speed/memory trade
    with torch.no_grad():
        qmodel(x)
    assert qmodel.resident_bytes() > report.float_resident_bytes
    assert qmodel.backend == "dequant_cached×2"


def test_a_close_call_gets_more_rounds_and_a_clear_one_does_not():
    from forgeline.quantize.latency import _undecided

    assert _undecided([1.0, 1.0], [1.0, 1.0], 1.0)  # under three rounds: never decided
    clear = ([1.0, 1.0, 1.0, 1.0], [0.50, 0.52, 0.49, 0.51])
    assert not _undecided(*clear, 1.0)
    close = ([1.0, 1.0, 1.0, 1.0], [0.97, 1.04, 0.99, 1.02])
    assert _undecided(*close, 1.0) and not _undecided(*close, 1.5)


def test_paired_timing_tells_a_slower_callable_apart():
    import time

    from forgeline.quantize.latency import paired_timing

    timed = paired_timing(lambda: time.sleep(0.004), lambda: time.sleep(0.001), 3,
                          max_repeats=6)
    assert timed.ratio < 0.8 and timed.a_ms > timed.b_ms and 3 <= timed.rounds <= 6


def test_a_model_still_slower_with_no_slow_layer_keeps_every_layer_float():
    """The last resort: the float model here never calls its layers (so none can be timed
    alone), and the quantized one decodes them on every call: slower, with no layer to blame."""
    import copy

    from forgeline.quantize.config import QuantizeConfig as Config
    from forgeline.quantize.latency import LatencyTask, apply_latency_objective
    from forgeline.quantize.runtime.backends import DequantBackend
    from forgeline.quantize.sensitivity import LayerBank

    class Bypass(nn.Sequential):  # the MLP's layer names; its forward skips them all
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    model = _mlp()
    work = copy.deepcopy(model)
    floats = {n: work.get_submodule(n) for n in ("0", "2")}
    config = Config(scheme="int8_wo", latency={"repeats": 3, "max_repeats": 3,
                                               "fallback": ["fp32"]})
    task = LatencyTask(float_model=Bypass(*copy.deepcopy(list(model))),
                       bank=LayerBank(work, floats, config, {}),
                       backend=DequantBackend(cache=False), example=torch.randn(8, 256),
                       config=config.latency)
    assignment = apply_latency_objective(task, {"0": "int8_wo", "2": "int8_wo"})
    assert assignment == {"0": "fp32", "2": "fp32"}
    rep = task.report
    assert rep.first_ratio["b1"] > 1 and rep.met is True
    assert all("still slower than float" in why for why in rep.changes.values())
    assert "kept float" in rep.notes[-1]
