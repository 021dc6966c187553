"""The demo's closing summary: what the run did, in a few lines."""

from forgeline.demo import summary_lines

STAGES = {
    "train": {"val_ppl_before": 260.8, "val_ppl_after": 8.6, "workers": 2, "zero_stage": 2,
              "tokens_per_s": 19020.0, "model_url": "file:///r/train/model.safetensors"},
    "quantize": {"scheme_counts": {"w8a8": 15, "int4_rtn": 2, "fp32": 2}, "size_ratio": 3.49,
                 "val_ppl_float": 8.88, "val_ppl_quantized": 8.89, "rel_ppl_increase": 0.0013,
                 "latency_ms": {"float_b1": 2.0, "quantized_b1": 2.6, "float_b32": 40.0,
                                "quantized_b32": 30.0},
                 "latency_ratio": {"b1": 1.3, "b32": 0.75},
                 "model_url": "file:///r/quantize/model"},
    "report": {"html_url": "file:///r/report/report.html",
               "markdown_url": "file:///r/report/report.md"},
}


def test_the_summary_says_scheme_mix_size_perplexity_and_latency():
    text = "\n".join(summary_lines(STAGES, "/r", 120.4, "manual__1"))
    assert "15 × w8a8, 2 × int4_rtn, 2 × fp32 layers, 3.49× smaller" in text
    assert "latency vs float: 1.30× at batch 1, 0.75× at batch 32" in text
    assert "/r/quantize/model" in text and "file://" not in text


def test_no_latency_line_without_measurements():
    stages = {**STAGES, "quantize": {**STAGES["quantize"], "latency_ratio": {}}}
    assert not any("latency" in line for line in summary_lines(stages, "/r", 1.0, "x"))
