"""The `gen` command line: thin commands over the library.

Each command parses options, builds the objects it needs and calls one library
function. Library errors (`GenError`) become one line on stderr and exit code 1.
Commands live in one module per group and import only `generator.cli.common`,
so the package has no import cycle.
"""

from __future__ import annotations

import click

from generator import __version__
from generator.cli.build import build, judge_eval
from generator.cli.common import debug_option
from generator.cli.evals import eval_command, evalset
from generator.cli.scale import merge, status, task
from generator.cli.shards import dedup, export, inspect, score
from generator.cli.templates import templates


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gen")
@debug_option
def main() -> None:
    """Generate synthetic alignment-pretraining documents into Arrow shards.

    \b
    Example:
      gen build --mix alignment-stories --limit 12 --out out/demo
    """


for command in (
    build,
    status,
    task,
    merge,
    templates,
    inspect,
    export,
    dedup,
    score,
    judge_eval,
    eval_command,
    evalset,
):
    main.add_command(command)
