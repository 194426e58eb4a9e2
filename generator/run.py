"""Running a whole build in this process: prepare, the one task, the merge.

What `gen build` does without `--tasks`, and what the library's users call; the
executors run the same task and merge functions elsewhere.
"""

from __future__ import annotations

from generator.build import Build, BuildResult
from generator.checkpoints import folder_refusal, locked
from generator.merge import merge_build
from generator.task import execute_task


def run_build(build: Build) -> BuildResult:
    """Prepare the folder, then generate and merge, holding the folder's lock; a build
    that is already complete under the same configuration touches nothing."""
    try:
        build.prepare()
        with locked(build.work / "lock", folder_refusal(build.out)):
            manifest = build.complete_manifest()
            if manifest is not None:
                return BuildResult(manifest, generated_now=0, already_complete=True)
            result = execute_task(build, rank=0, world_size=1)
            manifest = merge_build(build, execution={"executor": "in-process", "tasks": 1})
            return BuildResult(manifest, generated_now=result.generated_now, already_complete=False)
    finally:
        build.progress.close()
