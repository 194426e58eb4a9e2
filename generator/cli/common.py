"""What the `gen` commands share: one-line errors, option groups, engine and dedup options."""

from __future__ import annotations

import functools
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


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Show library errors as one clean line instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GenError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: run the same command again to resume", err=True)
            sys.exit(130)

    return wrapper


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
        default=0.9,
        show_default=True,
        help="vllm: share of GPU memory to use.",
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
