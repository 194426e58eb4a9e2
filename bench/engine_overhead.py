"""Does the pipeline cost throughput? Raw engine library vs `gen build`, same prompts.

Renders N prompts of the built-in mix, then in one run:
  raw        the engine's own library called directly (llama.cpp: one process
             using every core, a plain loop; vLLM: one `LLM.chat` batch);
  pipeline   the same documents through `Build.run()` with filters off, in the
             engine's default configuration (llama.cpp: one worker per core);
  one_worker (llama.cpp only) the pipeline with a single multi-threaded worker,
             the same shape as the raw loop, to isolate the pipeline's own cost.
Throughput is generated tokens (the engine's completion counts) per wall-clock
second, model loading included on both sides. The last line is one JSON object.

    python bench/engine_overhead.py --engine llamacpp --n 8 --max-tokens 256
    python bench/engine_overhead.py --engine vllm --model Qwen/Qwen2.5-7B-Instruct --n 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from filters.clean import CleanConfig
from generator.build import Build, plan_document
from generator.engines import EngineConfig, create_engine, usable_cores
from generator.mix import load_mix
from generator.prompts import TemplateLibrary
from shards.format import read_documents


def raw_llamacpp(model_path: Path, prompts: list[str], seeds: list[int], sampling) -> int:
    from llama_cpp import Llama

    cores = usable_cores()
    llm = Llama(
        model_path=str(model_path),
        n_ctx=4096,
        n_threads=cores,
        n_threads_batch=cores,
        verbose=False,
    )
    tokens = 0
    for prompt, seed in zip(prompts, seeds, strict=True):
        llm.reset()
        result = llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt}],
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=sampling.repetition_penalty,
            max_tokens=sampling.max_tokens,
            seed=seed,
        )
        tokens += result["usage"]["completion_tokens"]
    return tokens


def raw_vllm(model: str, prompts: list[str], seeds: list[int], sampling) -> int:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model)
    params = [
        SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            repetition_penalty=sampling.repetition_penalty,
            max_tokens=sampling.max_tokens,
            seed=seed,
        )
        for seed in seeds
    ]
    outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs)


def pipeline(mix, library, config: EngineConfig, n: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine = create_engine(config)
        try:
            Build(mix=mix, library=library, engine=engine, out=Path(tmp), limit=n).run()
        finally:
            engine.close()
        seconds = time.perf_counter() - start
        chunks = sorted((Path(tmp) / ".work" / "chunks").glob("chunk-*.arrow"))
        tokens = sum(doc.n_tokens for doc in read_documents(chunks))
    return tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["llamacpp", "vllm"], default="llamacpp")
    parser.add_argument("--model", help="GGUF path (llamacpp) or model id (vllm)")
    parser.add_argument("--n", type=int, default=8, help="documents")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()

    library = TemplateLibrary()
    mix = load_mix("alignment-stories", library).with_overrides(max_tokens=args.max_tokens)
    mix = dataclasses.replace(mix, filters=CleanConfig(min_words=0, drop_truncated=False))
    docs = [plan_document(mix, library, i) for i in range(args.n)]
    prompts, seeds = [d.prompt for d in docs], [d.seed for d in docs]
    config = EngineConfig(kind=args.engine, model=args.model)

    start = time.perf_counter()
    if args.engine == "llamacpp":
        model_path = create_engine(config).model_path
        raw_tokens = raw_llamacpp(model_path, prompts, seeds, mix.sampling)
    else:
        raw_tokens = raw_vllm(args.model, prompts, seeds, mix.sampling)
    raw_seconds = time.perf_counter() - start

    results = {"raw": (raw_tokens, raw_seconds), "pipeline": pipeline(mix, library, config, args.n)}
    if args.engine == "llamacpp":
        one = dataclasses.replace(config, workers=1)
        results["one_worker"] = pipeline(mix, library, one, args.n)

    report = {
        "bench": "engine_overhead",
        "engine": args.engine,
        "documents": args.n,
        "max_tokens": args.max_tokens,
        "cores": usable_cores(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    for name, (tokens, seconds) in results.items():
        report[f"{name}_tokens"] = tokens
        report[f"{name}_seconds"] = round(seconds, 2)
        report[f"{name}_tokens_per_s"] = round(tokens / seconds, 2)
    raw_rate = raw_tokens / raw_seconds
    report["pipeline_vs_raw"] = round(report["pipeline_tokens_per_s"] / raw_rate, 3)
    if "one_worker" in results:
        report["one_worker_vs_raw"] = round(report["one_worker_tokens_per_s"] / raw_rate, 3)
    report["target_met"] = report["pipeline_vs_raw"] >= 0.95
    for key, value in report.items():
        print(f"{key:>26}: {value}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
