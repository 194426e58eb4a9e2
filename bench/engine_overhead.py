"""Does the pipeline cost throughput? The raw engine library vs `gen build`, same work.

Plans N documents of the built-in mix (its sampling, its steps: idea, document,
revise), then in one run, each side from a cold start in its own fresh process:

  raw       the engine's library driven directly, with the same layout the pipeline
            uses (llama.cpp: one process per worker, each single-threaded, a plain
            loop of `create_chat_completion` per step; vLLM: one `LLM.chat` per step
            with the same `LLM` options), prompts rendered by the same templates;
  pipeline  `gen build` of the same documents: planning, the three steps with their
            checkpoints, cleaning, scoring, MinHash, the merge, shards and manifest.

Both sides time the same span: from process start to the last result on disk
(the raw side keeps its texts in memory), so engine start is included on both.
Reported: generated tokens (every step's completion tokens), wall seconds, tokens
per second, the pipeline's phases (start until the first generated token, the
generating span, and the tail after the last generated token: the merge), the
system-prompt prefix in tokens, and the end-to-end ratio pipeline / raw.
The last line is one JSON object.

    python bench/engine_overhead.py --engine llamacpp --n 8
    python bench/engine_overhead.py --engine vllm --model Qwen/Qwen2.5-7B-Instruct --n 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plan(n: int, max_tokens: int | None):
    from generator.build import Build, BuildSpec, planned_document

    spec = BuildSpec(mix="alignment-stories", limit=n, max_tokens=max_tokens)
    build = Build.from_spec(spec, Path("."))
    mix, library = build.mix, build.library
    docs = [planned_document(build.planner, mix.seed, i) for i in range(n)]
    return mix, library, docs


def raw_llamacpp(args: argparse.Namespace) -> dict:
    """The raw side: llama-cpp-python in `workers` single-threaded processes."""
    import multiprocessing

    from generator.engines import usable_cores

    workers = args.workers or usable_cores()
    mix, library, docs = plan(args.n, args.max_tokens)
    from generator.prompts import derive_seed

    def params(seed: int, max_tokens: int) -> dict:
        s = mix.sampling
        return {
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": max(s.top_k, 0),
            "min_p": s.min_p,
            "repeat_penalty": s.repetition_penalty,
            "max_tokens": max_tokens,
            "seed": seed,
        }

    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_raw_init, initargs=(args.model_path,)) as pool:
        pool.map(_raw_ready, range(workers))  # every worker loaded its model
        first_token = time.perf_counter()
        tokens = 0
        ideas: dict[int, str] = {}
        steps = mix.steps
        families = {doc.family: library.family(doc.family) for doc, _ in docs}
        wants = [d for d, _ in docs if steps.idea and "idea" in families[d.family].steps]
        jobs = []
        for doc in wants:
            prompt = library.render_step(doc.family, "idea", doc.axes, {})
            seed = derive_seed("idea", mix.seed, doc.index) % (2**31)
            jobs.append((prompt.system, prompt.user, params(seed, steps.idea_max_tokens)))
        for doc, (text, n) in zip(wants, pool.map(_raw_generate, jobs, chunksize=1), strict=True):
            ideas[doc.index] = text
            tokens += n
        jobs = []
        for doc, _ in docs:
            inputs = {"idea": ideas[doc.index]} if doc.index in ideas else {}
            prompt = library.render_step(doc.family, "document", doc.axes, inputs)
            jobs.append((prompt.system, prompt.user, params(doc.seed, mix.sampling.max_tokens)))
        drafts = pool.map(_raw_generate, jobs, chunksize=1)
        tokens += sum(n for _, n in drafts)
        jobs = []
        for (doc, _), (draft, _) in zip(docs, drafts, strict=True):
            if not (steps.revise and "revise" in families[doc.family].steps):
                continue
            inputs = {"idea": ideas.get(doc.index, ""), "draft": draft}
            prompt = library.render_step(doc.family, "revise", doc.axes, inputs)
            seed = derive_seed("revise", mix.seed, doc.index) % (2**31)
            jobs.append((prompt.system, prompt.user, params(seed, mix.sampling.max_tokens)))
        tokens += sum(n for _, n in pool.map(_raw_generate, jobs, chunksize=1))
    return {"tokens": tokens, "first_token_at": first_token}


_llm = None


def _raw_init(model_path: str) -> None:
    global _llm
    from llama_cpp import Llama

    _llm = Llama(model_path=model_path, n_ctx=4096, n_threads=1, n_threads_batch=1, verbose=False)


def _raw_ready(_: int) -> bool:
    return _llm is not None


def _raw_generate(job: tuple[str, str, dict]) -> tuple[str, int]:
    system, user, params = job
    _llm.reset()
    result = _llm.create_chat_completion(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        **params,
    )
    return result["choices"][0]["message"]["content"] or "", result["usage"]["completion_tokens"]


def raw_vllm(args: argparse.Namespace) -> dict:
    from vllm import LLM, SamplingParams

    from generator.prompts import derive_seed

    mix, library, docs = plan(args.n, args.max_tokens)
    llm = LLM(model=args.model)  # vLLM's own defaults, as the pipeline's engine uses them
    first_token = time.perf_counter()
    s = mix.sampling

    def run(items):
        params = [
            SamplingParams(
                temperature=s.temperature, top_p=s.top_p, repetition_penalty=s.repetition_penalty,
                max_tokens=max_tokens, seed=seed,
            )
            for _, _, seed, max_tokens in items
        ]  # fmt: skip
        conversations = [
            [{"role": "system", "content": sy}, {"role": "user", "content": us}]
            for sy, us, _, _ in items
        ]
        outputs = llm.chat(conversations, params, use_tqdm=False)
        return [(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outputs]

    ideas = {}
    items = []
    for doc, _ in docs:
        p = library.render_step(doc.family, "idea", doc.axes, {})
        seed = derive_seed("idea", mix.seed, doc.index) % (2**31)
        items.append((p.system, p.user, seed, mix.steps.idea_max_tokens))
    results = run(items)
    tokens = sum(n for _, n in results)
    ideas = {doc.index: text for (doc, _), (text, _) in zip(docs, results, strict=True)}
    items = []
    for doc, _ in docs:
        p = library.render_step(doc.family, "document", doc.axes, {"idea": ideas[doc.index]})
        items.append((p.system, p.user, doc.seed, s.max_tokens))
    drafts = run(items)
    tokens += sum(n for _, n in drafts)
    items = []
    for (doc, _), (draft, _) in zip(docs, drafts, strict=True):
        p = library.render_step(
            doc.family, "revise", doc.axes, {"idea": ideas[doc.index], "draft": draft}
        )
        items.append((p.system, p.user, derive_seed("revise", mix.seed, doc.index) % 2**31,
                      s.max_tokens))  # fmt: skip
    tokens += sum(n for _, n in run(items))
    return {"tokens": tokens, "first_token_at": first_token}


def pipeline(args: argparse.Namespace) -> dict:
    """The pipeline side: `gen build` in this process, phases timed by its progress."""
    from generator.build import Build, BuildSpec
    from generator.progress import Progress
    from generator.run import run_build

    class Clock(Progress):
        first = last = None

        def advance(self, items: int = 1, tokens: int = 0) -> None:
            if tokens:
                now = time.perf_counter()
                Clock.first = Clock.first or now
                Clock.last = now

    engine = {"kind": args.engine, "model": args.model, "workers": args.workers}
    spec = BuildSpec(mix="alignment-stories", limit=args.n, max_tokens=args.max_tokens,
                     engine=engine, judges="none")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        build = Build.from_spec(spec, Path(tmp) / "out", progress=Clock())
        try:
            run_build(build)
            prefix = _prefix_tokens(build)
        finally:
            build.close()
        tokens = 0
        import pyarrow as pa

        for folder in ("chunks", "steps/idea", "steps/draft"):
            for path in sorted((Path(tmp) / "out" / ".work" / folder).glob("chunk-*.arrow")):
                table = pa.ipc.open_stream(str(path)).read_all()
                tokens += sum(table["n_tokens"].to_pylist())
    return {"tokens": tokens, "first_token_at": Clock.first, "last_token_at": Clock.last,
            "system_prefix_tokens": prefix}  # fmt: skip


def _prefix_tokens(build) -> dict[str, int] | None:
    """Tokens of each family's system message that every document of it shares."""
    if build.engine.name != "llamacpp":
        return None
    from generator.engines.llamacpp import _Model

    model = _Model(build.engine.model_path, 1)
    systems = {f: build.library.family(f) for f in build.mix.families}
    rendered = {f: build.planner.library._system(fam, fam.system) for f, fam in systems.items()}
    return {f: len(model._prefix(text)) for f, text in rendered.items()}


def child(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    side = {"raw": raw_vllm if args.engine == "vllm" else raw_llamacpp, "pipeline": pipeline}
    result = side[args.child](args)
    result["seconds"] = time.perf_counter() - start
    result["start_seconds"] = (result.pop("first_token_at") or start) - start
    last = result.pop("last_token_at", None)
    if last is not None:
        result["tail_seconds"] = round(time.perf_counter() - start - (last - start), 2)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["llamacpp", "vllm"], default="llamacpp")
    parser.add_argument("--model", help="GGUF path (llamacpp) or model id (vllm)")
    parser.add_argument("--n", type=int, default=8, help="documents")
    parser.add_argument("--max-tokens", type=int, help="override the mix's max_tokens")
    parser.add_argument("--workers", type=int, help="llamacpp workers [one per core]")
    parser.add_argument("--child", choices=["raw", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    model_path = args.model
    if args.engine == "llamacpp" and not model_path:
        from generator.engines import bundled_model_path

        model_path = str(bundled_model_path())
    results = {}
    for side in ("raw", "pipeline"):
        command = [sys.executable, __file__, "--child", side, "--engine", args.engine,
                   "--n", str(args.n)]  # fmt: skip
        for flag, value in (("--model", args.model), ("--max-tokens", args.max_tokens),
                            ("--workers", args.workers), ("--model-path", model_path)):  # fmt: skip
            if value is not None:
                command += [flag, str(value)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
        if done.returncode != 0:
            sys.exit(f"{side} side failed:\n{done.stderr[-3000:]}")
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    raw, pipe = results["raw"], results["pipeline"]
    rate = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
    from generator.engines import usable_cores

    report = {
        "bench": "engine_overhead",
        "engine": args.engine,
        "documents": args.n,
        "max_tokens": args.max_tokens or "mix (1536)",
        "workers": args.workers or usable_cores(),
        "cores": usable_cores(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "raw": {**raw, "tokens_per_s": round(rate["raw"], 2), "seconds": round(raw["seconds"], 2)},
        "pipeline": {
            **pipe,
            "tokens_per_s": round(rate["pipeline"], 2),
            "seconds": round(pipe["seconds"], 2),
        },
        "pipeline_vs_raw": round(rate["pipeline"] / rate["raw"], 3),
    }
    report["target_met"] = report["pipeline_vs_raw"] >= 0.95
    print(json.dumps(report))


if __name__ == "__main__":
    main()
