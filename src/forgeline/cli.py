"""``forgeline`` command line: every stage runnable without Airflow.

    forgeline prepare --run-id R [dataset options]
    forgeline search  --run-id R [search options]   # prints the ranked plans
    forgeline train   --run-id R [training options]
    forgeline quantize --run-id R [quantization options]
    forgeline report  --run-id R
    forgeline run     [all options]   # prepare → search → train → quantize → report

Flags are generated from the stages' pydantic option models, so they match the Python
API and the DAG Params one to one. Results are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from forgeline import pipeline
from forgeline.datasets import DatasetConfig
from forgeline.errors import ForgelineError
from forgeline.quantize.stage import QuantizeOptions
from forgeline.runs import RunLayout, default_artifact_root, new_run_id
from forgeline.search.stage import StrategyOptions, StrategyResult
from forgeline.train import TrainOptions


def _flag_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) is not typing.Literal and args else annotation
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if typing.get_origin(base) is dict or base is dict:
        return json.loads
    return base if base in (int, float, str, bool) else str


def _add_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    group = parser.add_argument_group(f"{model.__name__} options")
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _flag_type(field.annotation)
        help_text = f"{field.description or ''} (default: {field.default!r})"
        choices = (
            list(typing.get_args(field.annotation))
            if typing.get_origin(field.annotation) is typing.Literal else None
        )
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=name, type=kind, choices=choices,
                               default=argparse.SUPPRESS, help=help_text)


def _options(args: argparse.Namespace, model: type[BaseModel]) -> Any:
    return model.model_validate({k: v for k, v in vars(args).items() if k in model.model_fields})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forgeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "prepare": ("build the token dataset", DatasetConfig),
        "search": ("rank parallel strategies; the train stage runs the best", StrategyOptions),
        "train": ("train with Ray Train + DeepSpeed", TrainOptions),
        "quantize": ("post-training quantization of the trained model", QuantizeOptions),
        "report": ("write the run's HTML/Markdown report", None),
        "run": ("every stage in order, without Airflow", pipeline.PipelineParams),
    }
    for name, (help_text, model) in commands.items():
        cmd = sub.add_parser(name, help=help_text)
        if name != "run":
            cmd.add_argument("--root", default=None,
                             help="artifact root URL (default: $FORGELINE_ARTIFACT_ROOT or "
                             "./artifacts)")
        cmd.add_argument("--run-id", required=name not in ("prepare", "run"), default=None,
                         help="run folder name under {root}/runs/")
        if model is not None:
            _add_options(cmd, model)
    return parser


def _execute(args: argparse.Namespace) -> BaseModel:
    if args.command == "run":
        return pipeline.run_pipeline(_options(args, pipeline.PipelineParams), args.run_id)
    layout = RunLayout(args.root or default_artifact_root(), args.run_id or new_run_id())
    if args.command == "prepare":
        return pipeline.prepare(layout, _options(args, DatasetConfig))
    if args.command == "search":
        return pipeline.search(layout, _options(args, StrategyOptions))
    if args.command == "quantize":
        return pipeline.quantize(layout, _options(args, QuantizeOptions))
    if args.command == "train":
        return pipeline.train(layout, _options(args, TrainOptions))
    return pipeline.report(layout)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = _parser().parse_args(argv)
    try:
        result = _execute(args)
    except (ValidationError, ForgelineError) as exc:
        print(f"forgeline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, StrategyResult):
        print(format_ranking(result))
    else:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    return 0


def format_ranking(result: StrategyResult) -> str:
    """The search's ranked plans as a plain-text table."""
    rows = [f"{'#':>2}  {'workers':>7}  {'ZeRO':>4}  {'micro':>5}  {'accum':>5}  "
            f"{'recompute':>9}  {'offload':>10}  {'step (s)':>9}  {'memory/dev (MiB)':>16}  "
            "bound by"]
    for rank, plan in enumerate(result.ranking, 1):
        c = plan["config"]
        accum = result.deepspeed_config["train_batch_size"] // (
            c["micro_batch_size"] * c["data_parallel"])
        rows.append(
            f"{rank:>2}  {c['data_parallel']:>7}  {c['zero_stage']:>4}  "
            f"{c['micro_batch_size']:>5}  {accum:>5}  {c['recompute']:>9}  {c['offload']:>10}  "
            f"{plan['step_time_s']:>9.4f}  {plan['memory_bytes'] / 2**20:>16.1f}  "
            f"{plan['bound_by']}"
        )
    rows.append(f"{result.candidates_evaluated} candidates in {result.search_s:.3f} s on "
                f"{result.cluster}; plan: {result.plan_url}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
