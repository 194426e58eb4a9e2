"""One place for one-line errors: whatever a command raises that comes from the machine
or the input (disk full, a read-only folder, undecodable text, memory, nesting, a
library's ValueError) is one line naming the file where known, and exit code 1;
GEN_DEBUG=1 (or `--debug` through `debug_option`) shows the traceback instead."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import traceback
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from generator.cli.common import DEBUG_ENV, debug_option, user_errors
from generator.errors import MixError


def command_raising(exc: BaseException) -> click.Command:
    """A real click command, wrapped the way every gen command is, that fails with `exc`."""

    @click.command()
    @user_errors
    def fails() -> None:
        raise exc

    return fails


def run(exc: BaseException, debug: bool = False):
    env = {DEBUG_ENV: "1"} if debug else {}
    return CliRunner().invoke(command_raising(exc), [], env=env)


def one_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_disk_full_while_writing_is_one_line_naming_the_file():
    exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/run1/.work/chunks/chunk-0.arrow")
    assert one_line(run(exc)) == (
        "Error: out/run1/.work/chunks/chunk-0.arrow: no space left on device; free some space "
        "and run the same command again (a build resumes where it stopped)"
    )


def test_a_real_disk_full_error_from_dev_full():
    """The kernel's own ENOSPC, from writing to /dev/full inside a command."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")

    @click.command()
    @user_errors
    def writes() -> None:
        with open("/dev/full", "w") as sink:
            sink.write("x" * 100_000)

    line = one_line(CliRunner().invoke(writes, []))
    assert line.startswith("Error: no space left on device; free some space")
    assert f"(set {DEBUG_ENV}=1 to see the traceback)" in line


def test_a_read_only_folder_is_one_line():
    exc = OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out")
    assert (
        one_line(run(exc)) == "Error: /mnt/ro/out: read-only file system; choose a writable folder"
    )


def test_a_missing_parent_is_one_line_with_the_system_message():
    exc = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "afile/sub")
    assert one_line(run(exc)) == "Error: afile/sub: No such file or directory"


def test_undecodable_text_is_one_line():
    exc = UnicodeDecodeError("utf-8", b"caf\xe9 au lait", 3, 4, "invalid continuation byte")
    assert one_line(run(exc)) == (
        "Error: cannot read text as utf-8 (byte b'\\xe9' at offset 3); the input must be UTF-8 "
        f"(set {DEBUG_ENV}=1 to see the traceback)"
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (MemoryError(), "out of memory; use a smaller input, --limit or --chunk-size"),
        (RecursionError("maximum recursion depth exceeded"), "input nested too deeply to process"),
        (ValueError("field larger than field limit (131072)"), "field larger than field limit"),
        (OverflowError("int too large to convert"), "int too large to convert"),
    ],
)
def test_other_unexpected_failures_are_one_line(exc, expected):
    line = one_line(run(exc))
    assert line.startswith(f"Error: {expected}")
    assert line.endswith(f"(set {DEBUG_ENV}=1 to see the traceback)")


def test_a_huge_message_is_cut():
    line = one_line(run(ValueError("x" * 5000)))
    assert len(line) < 400


def test_library_errors_stay_exactly_as_they_were():
    assert one_line(run(MixError("bad.yaml: documents: missing"))) == (
        "Error: bad.yaml: documents: missing"
    )


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device", "x.arrow"),
        ValueError("boom"),
        MixError("bad.yaml: nope"),
    ],
)
def test_gen_debug_shows_the_traceback(exc):
    result = run(exc, debug=True)
    assert result.exit_code == 1
    assert result.exception is exc
    text = "".join(traceback.format_exception(result.exception))
    assert "Traceback" in text and "in fails" in text


def test_bugs_keep_their_traceback():
    result = run(KeyError("a bug"))
    assert isinstance(result.exception, KeyError)


def test_the_debug_option_switches_tracebacks_on(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    @click.group()
    @debug_option
    def cli() -> None:
        pass

    cli.add_command(command_raising(ValueError("boom")), "fails")
    quiet = CliRunner().invoke(cli, ["fails"])
    assert one_line(quiet).startswith("Error: boom")
    loud = CliRunner().invoke(cli, ["--debug", "fails"])
    assert isinstance(loud.exception, ValueError)
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def test_the_real_gen_prints_one_line_or_a_traceback(tmp_path):
    """End to end in a subprocess: a non-UTF-8 mix read through the real `gen`."""
    mix = tmp_path / "bad.yaml"
    mix.write_bytes(b"name: caf\xe9\n")
    command = [
        sys.executable,
        "-m",
        "generator",
        "build",
        "--mix",
        str(mix),
        "--out",
        str(tmp_path / "o"),
    ]
    quiet = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, DEBUG_ENV: "0"}
    )
    assert quiet.returncode == 1
    assert quiet.stderr.strip() == f"Error: {mix}: not UTF-8 text (invalid byte at offset 9)"
    loud = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, DEBUG_ENV: "1"}
    )
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr
    assert "MixError" in loud.stderr
