"""What every benchmark script shares on its command line and around its report.

The scripts differ in what they measure, not in how a run is named, seeded,
fed or written down: the flags for that are declared once here, with the same
names, help and defaults in every script. Defaults that depend on a checkout
(where inputs and results live) come from the script, which knows its checkout;
the package does not.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structsum.bench.inputs import Input, read_inputs
from structsum.bench.report import base_report, parse_metadata, report_filename, write_report

DEFAULT_TEMPLATE_ID = "generic_summary_v1"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


@dataclass(frozen=True)
class CheckoutDefaults:
    """Where a script inside a source checkout reads inputs and writes results."""

    root: Path
    input_dirs: tuple[Path, ...]
    result_dir: Path


def checkout_defaults(root: Path) -> CheckoutDefaults:
    """Defaults for a checkout at ``root`` (a script passes its own repository root)."""
    return CheckoutDefaults(
        root=root,
        input_dirs=(root / "tests" / "data" / "inputs", root / "scripts" / "samples"),
        result_dir=root / "results",
    )


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of the script's docstring."""
    return argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )


def add_output_flags(parser: argparse.ArgumentParser, defaults: CheckoutDefaults) -> None:
    """--result-dir, --result-filename, --metadata: where the report goes and its labels."""
    group = parser.add_argument_group("report")
    group.add_argument(
        "--result-dir", type=Path, default=defaults.result_dir, help="default: results/"
    )
    group.add_argument(
        "--result-filename", default=None, help="default: <benchmark>-<date>[-<label>].json"
    )
    group.add_argument(
        "--metadata",
        nargs="*",
        action="extend",  # repeated flags add up (a wrapper's label and the caller's pairs)
        default=[],
        metavar="KEY=VALUE",
        help="stored in the report; a later KEY wins",
    )


def add_input_flags(
    parser: argparse.ArgumentParser,
    defaults: CheckoutDefaults,
    *,
    max_input_chars: int | None = None,
) -> None:
    """--inputs-dir (repeatable, first non-empty folder wins) and --max-input-chars."""
    group = parser.add_argument_group("inputs")
    group.add_argument(
        "--inputs-dir",
        type=Path,
        action="append",
        default=None,
        help="folder of .txt inputs, repeatable (first non-empty wins); default: "
        + ", ".join(str(d.relative_to(defaults.root)) for d in defaults.input_dirs),
    )
    group.add_argument(
        "--max-input-chars",
        type=int,
        default=max_input_chars,
        help="skip longer inputs: chunked map/reduce is another workload (0: no limit)",
    )


def script_inputs(
    args: argparse.Namespace, defaults: CheckoutDefaults, *, builtin: bool = True
) -> tuple[list[Input], str]:
    """The inputs of the folders --inputs-dir named (or the checkout's), and their source."""
    return read_inputs(args.inputs_dir or defaults.input_dirs, builtin=builtin)


def add_seed_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--seed", type=int, default=0, help=help_text)


def add_template_id_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--template-id", default=DEFAULT_TEMPLATE_ID, help=f"default: {DEFAULT_TEMPLATE_ID}"
    )
    parser.add_argument("--language", default=None, help="output language hint, e.g. en")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed flags; a malformed --metadata pair is refused now, not after the run."""
    args = parser.parse_args(argv)
    try:
        parse_metadata(args.metadata)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def setup_logging() -> None:
    """Progress on stderr: stdout carries the table and the report path."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def script_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as the report stores them (paths as strings)."""
    arguments: dict[str, Any] = {}
    for key, value in vars(args).items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list) and any(isinstance(v, Path) for v in value):
            value = [str(v) for v in value]
        arguments[key] = value
    return arguments


def start_report(
    benchmark: str,
    args: argparse.Namespace,
    *,
    model: str | None,
    defaults: CheckoutDefaults,
) -> dict[str, Any]:
    """The report head for this run: arguments, metadata, machine, versions, commit."""
    return base_report(
        benchmark,
        arguments=script_arguments(args),
        model=model,
        metadata=parse_metadata(args.metadata),
        source_dir=defaults.root,
    )


def finish_report(
    report: dict[str, Any], args: argparse.Namespace, *, default_filename: str | None = None
) -> Path:
    """Write the report where --result-dir/--result-filename say; returns its path."""
    filename = args.result_filename or default_filename or report_filename(report["benchmark"])
    return write_report(report, args.result_dir, filename)
