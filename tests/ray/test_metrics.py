from forgeline.ray import MetricsLogger, read_metrics


def test_appends_keeping_earlier_records_and_drops_nan():
    url = "memory://metrics/run/metrics.jsonl"
    MetricsLogger(url, stage="cache").after_report(None, [{"step": 1, "hits": 3}], None)
    logger = MetricsLogger(url)
    logger.after_report(None, [{"step": 1, "loss": 2.0}, {"step": 1, "loss": 9.0}], None)
    logger.after_report(None, [{"step": 2, "loss": float("nan")}], None)
    records = read_metrics(url)
    assert [(r["stage"], r["step"]) for r in records] == [("cache", 1), ("train", 1), ("train", 2)]
    assert records[1]["loss"] == 2.0  # rank 0's value
    assert records[2]["loss"] is None


def test_missing_file_reads_empty():
    assert read_metrics("memory://metrics/none.jsonl") == []
