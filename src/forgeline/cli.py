"""``forgeline`` command line: every stage runnable without Airflow.

    forgeline prepare  --run-id R [dataset options]
    forgeline search   --run-id R [search options]   # prints the ranked plans
    forgeline train    --run-id R [training options]
    forgeline cache    --run-id R [training options]  # warm a long-lived cache server
    forgeline quantize --run-id R [quantization options]
    forgeline report   --run-id R
    forgeline export   --run-id R [--targets model checkpoint plan]  # standard formats
    forgeline run      [all options]   # prepare → search → train → quantize → report

The subcommands and their flags are generated from the stage table (``forgeline.stages``)
and the stages' options models, so they match the Python API and the DAG Params one to one:
a nested section's field is a flag with the section's prefix (``--checkpoint-every-steps``),
a list takes several values or one comma-separated value (``--zero-stages 1 2`` or
``--zero-stages 1,2``), ``none`` clears an optional value, a dict is JSON. Results are
printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from forgeline.errors import ForgelineError
from forgeline.operators.params import edge_fields
from forgeline.options import FlatField, unflatten
from forgeline.pipeline import PipelineParams, run_pipeline
from forgeline.runs import RunLayout, default_artifact_root, new_run_id
from forgeline.stages import STAGES

_NONE = ("none", "null")


def _scalar(kind: Any, optional: bool) -> Any:
    def parse(text: str) -> Any:
        if optional and text.lower() in _NONE:
            return None
        if kind is bool:
            return text.lower() in ("1", "true", "yes", "on")
        return kind(text) if kind in (int, float) else text

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names it in errors
    return parse


class _ExtendCommaList(argparse.Action):
    """``--x 1 2`` and ``--x 1,2`` (and ``--x 1,2 3``) all give ``[1, 2, 3]``."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        items = [part for value in values for part in str(value).split(",") if part]
        parse = self.const
        setattr(namespace, self.dest, None if items == ["none"] else [parse(i) for i in items])


def _add_flag(group: Any, field: FlatField) -> None:
    flag = "--" + field.name.replace("_", "-")
    default = field.default.value if hasattr(field.default, "value") else field.default
    help_text = f"{field.description} (default: {json.dumps(default, default=str)})".replace(
        "%", "%%")  # argparse formats help with %
    common = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
    if field.kind == "bool":
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
    elif field.kind == "list":
        item = field.item if field.item in (int, float, str) else str
        group.add_argument(flag, nargs="+", action=_ExtendCommaList, const=item,
                           metavar=item.__name__.upper(), **common)
    elif field.kind == "dict":
        group.add_argument(flag, type=json.loads, metavar="JSON", **common)
    elif field.kind == "enum":
        choices = list(field.choices or ())
        kind = type(choices[0]) if choices else str
        group.add_argument(flag, type=_scalar(kind, field.optional),
                           choices=choices + ([None] if field.optional else []), **common)
    else:
        group.add_argument(flag, type=_scalar(field.annotation, field.optional), **common)


def _add_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    groups: dict[str, Any] = {}
    for field in edge_fields(model):
        if field.section not in groups:
            groups[field.section] = parser.add_argument_group(f"{field.section} options")
        _add_flag(groups[field.section], field)


def _options(args: argparse.Namespace, model: type[BaseModel]) -> Any:
    flat = {f.name: getattr(args, f.name) for f in edge_fields(model) if hasattr(args, f.name)}
    return model.model_validate(unflatten(model, flat))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forgeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES.values():
        cmd = sub.add_parser(stage.name, help=stage.summary)
        cmd.add_argument("--root", default=None, help="artifact root URL (default: "
                         "$FORGELINE_ARTIFACT_ROOT or ./artifacts)")
        cmd.add_argument("--run-id", required=stage.name != "prepare", default=None,
                         help="run folder name under {root}/runs/")
        _add_options(cmd, stage.options)
    cmd = sub.add_parser("run", help="every stage in order, without Airflow")
    cmd.add_argument("--run-id", default=None, help="run folder name under {root}/runs/")
    _add_options(cmd, PipelineParams)
    return parser


def _execute(args: argparse.Namespace) -> BaseModel:
    if args.command == "run":
        return run_pipeline(_options(args, PipelineParams), args.run_id)
    stage = STAGES[args.command]
    layout = RunLayout(args.root or default_artifact_root(), args.run_id or new_run_id())
    return stage.run(layout, _options(args, stage.options))


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
    if args.command == "search":
        print(format_ranking(result))
    else:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    return 0


def format_ranking(result: Any) -> str:
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
