"""The stage table is the one description of every stage: CLI, operators and pipeline agree."""

from forgeline.cli import _parser
from forgeline.operators import STAGE_OPERATORS
from forgeline.pipeline import PIPELINE_ORDER, PipelineParams
from forgeline.stages import STAGES


def _subcommands() -> dict:
    action = next(a for a in _parser()._actions if a.dest == "command")
    return dict(action.choices)


def test_cli_operators_and_table_list_the_same_stages():
    assert set(_subcommands()) - {"run"} == set(STAGES)
    assert set(STAGE_OPERATORS) == set(STAGES)
    assert set(PIPELINE_ORDER) <= set(STAGES)


def test_operators_and_cli_use_the_tables_option_models():
    for name, stage in STAGES.items():
        assert STAGE_OPERATORS[name].spec().options is stage.options
        flags = {a.dest for a in _subcommands()[name]._actions} - {"help", "root", "run_id"}
        expected = {f.name for f in __import__("forgeline.options", fromlist=["x"]).flat_fields(
            stage.options)}
        assert flags == expected, name


def test_the_pipeline_hands_each_stage_its_tables_model():
    params = PipelineParams()
    for name in PIPELINE_ORDER:
        options = params.stage_options(name)
        assert isinstance(options, STAGES[name].options), name


def test_result_models_resolve():
    assert {STAGES[n].result.__name__ for n in STAGES} == {
        "DatasetResult", "StrategyResult", "TrainResult", "WarmupResult", "QuantizeResult",
        "ReportResult", "ExportResult"}
