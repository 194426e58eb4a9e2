"""Planning speed: documents planned per second on one core, no model.

Planning is what every build, `gen templates render` and every task of a
scaled-out build does before generating: choose the family by weight, sample
the axes and seeds, render the prompt. At 15 million documents, 4,700
documents/s is close to an hour of one core per planning pass. This plans N
documents of a mix in one process, two ways, in the same run:

  planner   generator.prompts.Planner (compiled templates, lists and seed pools
            loaded once, cached compatible choices per slot);
  old       the code and templates of an earlier commit (default 56c4c5b, before
            the seed pools and the coherence rules), taken from git, planned as
            generator/build.py's plan_document did then.

Both are timed on CPU time (what one core spends, the figure that matters on
a loaded machine) and wall time. The last line printed is one JSON object.

    python bench/planning.py                   # 20,000 documents of alignment-stories
    python bench/planning.py --n 100000 --stats  # also the diversity figures of the plan
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.mix import load_mix  # noqa: E402
from generator.prompts import Planner, TemplateLibrary, plan_stats  # noqa: E402


def time_it(run: Any, n: int) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "docs_per_s_cpu": round(n / cpu)}


def old_planner(ref: str, tmp: Path, families: dict[str, float], seed: int) -> Any:
    """The earlier commit's prompts module over that commit's templates."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:generator/prompts.py"],
        capture_output=True,
        check=True,
    ).stdout
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "templates"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / "old_prompts.py").write_bytes(source)
    spec = importlib.util.spec_from_file_location("old_prompts", tmp / "old_prompts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_prompts"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    library = module.TemplateLibrary(tmp / "templates")
    names = [n for n in families if (tmp / "templates" / "families" / f"{n}.yaml").exists()]
    weights = [families[n] for n in names]

    def plan(index: int) -> Any:
        family = random.Random(module.derive_seed("family", seed, index)).choices(
            names, weights=weights
        )[0]
        return library.render_document(family, seed, index)

    return plan, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--mix", default="alignment-stories")
    parser.add_argument("--old-ref", default="56c4c5b")
    parser.add_argument("--stats", action="store_true", help="also report plan_stats figures")
    args = parser.parse_args()

    library = TemplateLibrary()
    mix = load_mix(args.mix, library)
    planner = Planner(library, dict(mix.families), mix.seed)
    planner.plan_many(range(200))  # warm: caches of compatible choices, systems
    result: dict[str, Any] = {
        "bench": "planning",
        "mix": mix.name,
        "n": args.n,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    result["planner"] = time_it(lambda: planner.plan_many(range(args.n)), args.n)
    print(f"planner: {result['planner']}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            plan, names = old_planner(args.old_ref, Path(tmp), dict(mix.families), mix.seed)
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            result["old"] = {"skipped": f"cannot read {args.old_ref} from git: {exc}"}
        else:
            for i in range(200):
                plan(i)
            result["old"] = time_it(lambda: [plan(i) for i in range(args.n)], args.n)
            result["old"]["ref"] = args.old_ref
            result["old"]["families"] = names
            result["speedup_cpu"] = round(
                result["old"]["cpu_s"] / max(result["planner"]["cpu_s"], 1e-9), 2
            )
            print(f"old: {result['old']}", file=sys.stderr)

    if args.stats:
        stats = plan_stats(planner, range(args.n))
        result["max_top_share"] = stats["max_top_share"]
        result["top_shares"] = {k: v["top"][0]["share"] for k, v in stats["axes"].items()}
        result["max_combination_repeats"] = stats["max_combination_repeats"]
        result["max_axis_combination_repeats"] = stats["max_axis_combination_repeats"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
