"""What the `gen` commands share: one-line errors, option groups, engine and dedup options."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from generator.engines import ENGINE_KINDS, EngineConfig
from generator.errors import GenError

DEFAULT_OUT = Path("out")

templates_option = click.option(
    "--templates",
    "templates_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="A folder of families/, lists/ and mixes/ searched before the built-in templates.",
)


DEBUG_ENV = "GEN_DEBUG"

# Failures that come from the input or the machine rather than from a bug in gen: shown
# as one line. Anything else keeps its traceback, since it is a bug to report.
UNEXPECTED_BUT_USER_FACING = (
    OSError,
    UnicodeError,
    MemoryError,
    RecursionError,
    ValueError,
    OverflowError,
)


DEBUG_META = "alignment_datagen.debug"


def debug_enabled() -> bool:
    """`GEN_DEBUG=1` or `gen --debug` shows tracebacks. The flag lives in this invocation's
    click context (shared by its subcommands), never in the process environment, so it
    cannot outlive the command that asked for it."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(DEBUG_META):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in {"", "0", "false", "no"}


def _enable_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG_META] = True


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_enable_debug,
    help=f"Show the full traceback of an error instead of one line (or set {DEBUG_ENV}=1).",
)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Show every error a user can cause as one clean line instead of a traceback: the
    library's own errors, and the failures that come from the machine or the input (disk
    full, a read-only folder, undecodable text, memory, nesting, a library's ValueError).
    With GEN_DEBUG=1 the traceback is shown instead."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GenError as exc:
            if debug_enabled():
                raise
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `gen inspect ... | head`: the reader left, nothing to say
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the exit flush quiet
            sys.exit(1)
        except UNEXPECTED_BUT_USER_FACING as exc:
            if debug_enabled():
                raise
            raise click.ClickException(describe_error(exc)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: run the same command again to resume", err=True)
            sys.exit(130)

    return wrapper


def describe_error(exc: BaseException) -> str:
    """One line for an error that is not one of ours, naming the file where Python knows it."""
    hint = f" (set {DEBUG_ENV}=1 to see the traceback)"
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else exc.filename2
        what = {
            errno.ENOSPC: "no space left on device; free some space and run the same command "
            "again (a build resumes where it stopped)",
            errno.EROFS: "read-only file system; choose a writable folder",
            errno.EDQUOT: "disk quota exceeded; free some space and run the same command again",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
        }.get(exc.errno or 0, exc.strerror or type(exc).__name__)
        return f"{where}: {what}" if where is not None else f"{what}{hint}"
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"cannot read text as {exc.encoding} (byte {exc.object[exc.start : exc.start + 1]!r} "
            f"at offset {exc.start}); the input must be UTF-8{hint}"
        )
    if isinstance(exc, MemoryError):
        return f"out of memory; use a smaller input, --limit or --chunk-size{hint}"
    if isinstance(exc, RecursionError):
        return f"input nested too deeply to process{hint}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text if len(text) <= 300 else text[:300] + "..."
    return f"{text}{hint}"


def option_group(name: str, options: list[Callable[..., Any]], build: Callable[..., Any]):
    """Apply a group of click options and hand the command one value, `name`, that
    `build` makes from their values (passed as keyword arguments)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        probe: Any = lambda: None  # noqa: E731 - only collects the options' parameter names
        for option in options:
            probe = option(probe)
        keys = [param.name for param in probe.__click_params__]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{key: kwargs.pop(key) for key in keys})
            return func(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


DEDUP_OPTIONS = [
    click.option(
        "--dedup-threshold",
        type=click.FloatRange(0, 1, min_open=True),
        help="Jaccard similarity at which documents count as near-duplicates [0.8].",
    ),
    click.option("--dedup-ngram", type=click.IntRange(min=1), help="Words per shingle [5]."),
    click.option(
        "--dedup-num-perm", type=click.IntRange(min=1), help="MinHash permutations [128]."
    ),
]


dedup_options = option_group(
    "dedup",
    DEDUP_OPTIONS,
    lambda dedup_threshold, dedup_ngram, dedup_num_perm: {
        "threshold": dedup_threshold,
        "ngram": dedup_ngram,
        "num_perm": dedup_num_perm,
    },
)

ENGINE_OPTIONS = [
    click.option(
        "--engine",
        type=click.Choice(ENGINE_KINDS),
        default="auto",
        show_default=True,
        help="auto: vLLM on a CUDA machine when --model is not a GGUF file, else llama.cpp.",
    ),
    click.option(
        "--model",
        help="llamacpp: a GGUF file [default: bundled SmolLM2-135M-Instruct]; "
        "vllm: a Hugging Face id or local path; openai: the served model's name.",
    ),
    click.option("--base-url", help="openai: the server's base URL, e.g. http://localhost:8000/v1"),
    click.option(
        "--api-key-env",
        default="OPENAI_API_KEY",
        show_default=True,
        help="openai: the environment variable holding the API key (never printed or stored).",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="openai: requests in flight at once.",
    ),
    click.option(
        "--max-retries",
        type=click.IntRange(min=0),
        default=8,
        show_default=True,
        help="openai: retries per request on timeouts, 429 and 5xx.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="llamacpp: worker processes, each with its own model  [default: one per core]",
    ),
    click.option(
        "--tensor-parallel-size",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="vllm: GPUs per model replica.",
    ),
    click.option(
        "--gpu-memory-utilization",
        type=click.FloatRange(0, 1, min_open=True),
        help="vllm: share of GPU memory to use  [default: vLLM's own, 0.92 in vLLM 0.25]",
    ),
    click.option(
        "--batch-invariant/--no-batch-invariant",
        default=True,
        show_default=True,
        help="vllm: batch-invariant kernels (VLLM_BATCH_INVARIANT=1), so a document's text "
        "does not depend on the chunk size or on a kill and resume.",
    ),
    click.option("--max-model-len", type=click.IntRange(min=1), help="vllm: context length."),
    click.option("--dtype", default="auto", show_default=True, help="vllm: weight dtype."),
    click.option("--quantization", help="vllm: quantization method (awq, gptq, fp8, ...)."),
]


def _engine_config(
    engine: str,
    model: str | None,
    base_url: str | None,
    api_key_env: str,
    concurrency: int,
    max_retries: int,
    workers: int | None,
    **vllm: Any,
) -> EngineConfig:
    return EngineConfig(
        kind=engine,
        model=model,
        base_url=base_url,
        api_key_env=api_key_env,
        concurrency=concurrency,
        max_retries=max_retries,
        workers=workers,
        vllm=vllm,
    )


engine_options = option_group("engine_config", ENGINE_OPTIONS, _engine_config)
