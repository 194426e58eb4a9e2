"""Real clusters on this machine for the executor tests: Slurm and Ray, on loopback only.

Both are started once per test session, under a temp folder, and torn down by the
PIDs they were started with (never by name: other clusters may run on the same
machine). The Slurm cluster is Debian's `slurm-wlm` with `auth/none`, so it needs
no munge key and nothing in /etc; its settings make a requeued job restart in
seconds rather than minutes and kill a job whose `afterok` dependency failed
instead of leaving it pending forever.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")
SLURM_CPUS = 4  # more than this machine's cores: slurmd is told to trust the config

SLURM_CONF = """\
ClusterName=gentest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=bf_interval=2,sched_interval=2
DependencyParameters=kill_invalid_depend
SlurmdParameters=config_overrides
MinJobAge=300
ReturnToService=2
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL: only the process we started, by its PID."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@dataclass
class SlurmCluster:
    """A single-node Slurm cluster in `root`; `env` is what a client needs to reach it."""

    root: Path
    daemons: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, check=False, timeout=30
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        import getpass

        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            SLURM_CONF.format(
                root=self.root,
                user=getpass.getuser(),
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                cpus=SLURM_CPUS,
            )
        )
        # -D keeps each daemon in the foreground (so its PID is ours) and in our cwd.
        for cmd in (
            ["slurmctld", "-D", "-i", "-f", str(self.conf)],
            ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)],
        ):
            log = (self.root / f"{cmd[0]}.stdout").open("w")
            self.daemons.append(
                subprocess.Popen(
                    cmd, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for daemon in self.daemons:
                if daemon.poll() is not None:
                    raise AssertionError(
                        f"{daemon.args[0]} exited: see {self.root}/{daemon.args[0]}.log"
                    )
            state = self.run("sinfo", "-h", "-o", "%T", check=False).strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise AssertionError(f"the Slurm node never became idle (last state {state!r})")

    def jobs(self) -> list[str]:
        """Every job still known to squeue, as 'JOBID STATE' lines."""
        return self.run("squeue", "-h", "-o", "%i %T").split("\n")[:-1]

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until no job is left in the queue."""
        deadline = time.monotonic() + timeout
        while self.jobs():
            if time.monotonic() > deadline:
                raise AssertionError(f"Slurm jobs still queued: {self.jobs()}")
            time.sleep(0.25)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run("scancel", "--user", os.environ.get("USER", "root"), check=False)
        for daemon in reversed(self.daemons):
            _stop(daemon)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    missing = [name for name in SLURM_BINARIES if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing)} not found); "
            "apt-get install -y slurm-wlm to run these tests"
        )
    # A short root: slurm paths end up in sockets and command lines.
    cluster = SlurmCluster(Path(tmp_path_factory.mktemp("slurm")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm_env(slurm_cluster: SlurmCluster, monkeypatch) -> SlurmCluster:
    """The cluster, with SLURM_CONF set for this test's own process (sbatch, squeue)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[object]:
    """A local Ray cluster with 2 CPUs, bound to 127.0.0.1, connected to this process.

    Its temp folder and HOME are the test's own, so its files and processes are
    ours alone; it is always shut down, even when a test fails.
    """
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    root = tmp_path_factory.mktemp("ray")
    # Ray's socket paths must stay short: a deep pytest temp folder overflows them.
    temp_dir = Path("/tmp") / f"ray-gen-{os.getpid()}"
    saved = {k: os.environ.get(k) for k in ("RAY_USAGE_STATS_ENABLED", "HOME")}
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["HOME"] = str(root)
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=str(temp_dir),
            object_store_memory=256 * 1024 * 1024,
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
        )
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(temp_dir, ignore_errors=True)


# -- the small build the executor tests run -----------------------------------------------

# One short family and loose filters: every document is kept, so comparing shards
# compares real rows, and a task of two 12-token documents takes seconds.
MINI_FAMILY = """\
version: 1
template: note.j2
axes:
  topic: [a lighthouse, a river, a library, a garden, an old bridge, a night train]
  mood: [calm, tense, hopeful]
"""
MINI_TEMPLATE = "Write two {{ mood }} sentences about {{ topic }}."
MINI_MIX = """\
name: mini
documents: 50
seed: 7
families:
  note: 1
sampling:
  temperature: 0.8
  top_p: 0.95
  max_tokens: 12
scores:
  quality: null
  repetition: null
  slop: null
  chatter: null
filters:
  min_words: 2
  drop_truncated: false
shards:
  max_rows: 2
"""
MINI_LIMIT = 6
MINI_CHUNK = 1


@dataclass(frozen=True)
class MiniBuild:
    """The mix and template folder every executor test builds from (the same files, so
    manifests can be compared), and how to prepare an output folder for it."""

    mix: Path
    templates: Path

    def build_args(self, out: Path, *extra: str) -> list[str]:
        return [
            "build",
            "--mix",
            str(self.mix),
            "--templates",
            str(self.templates),
            "--out",
            str(out),
            "--limit",
            str(MINI_LIMIT),
            "--chunk-size",
            str(MINI_CHUNK),
            "--engine",
            "llamacpp",
            "--quiet",
            *extra,
        ]

    def spec(self) -> Any:
        import dataclasses

        from generator.build import BuildSpec
        from generator.engines import EngineConfig

        return BuildSpec(
            mix=str(self.mix),
            templates_dir=str(self.templates),
            limit=MINI_LIMIT,
            chunk_size=MINI_CHUNK,
            engine=dataclasses.asdict(EngineConfig(kind="llamacpp")),
        )

    def prepare(self, out: Path) -> Path:
        """What `gen build` does before it hands OUT to an executor."""
        from generator.build import Build

        build = Build.from_spec(self.spec(), out)
        try:
            build.prepare()
        finally:
            build.close()
        return out

    def run_in_process(self, out: Path) -> Path:
        """The single-process build every sharded build must equal."""
        from generator.build import Build
        from generator.run import run_build

        build = Build.from_spec(self.spec(), out)
        try:
            run_build(build)
        finally:
            build.close()
        return out


def write_mini(root: Path) -> MiniBuild:
    (root / "templates" / "families").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "families" / "note.yaml").write_text(MINI_FAMILY)
    (root / "templates" / "families" / "note.j2").write_text(MINI_TEMPLATE)
    (root / "mini.yaml").write_text(MINI_MIX)
    return MiniBuild(root / "mini.yaml", root / "templates")


def build_fingerprint(out: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """sha256 of every shard file, and the manifest without its executor fields: what
    must be equal between a sharded build and the single-process one."""
    import hashlib
    import json

    shards = {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("shard-*.arrow"))
        if ".work" not in p.parts
    }
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("execution", None)
    return shards, manifest


@pytest.fixture(scope="session")
def mini(tmp_path_factory) -> MiniBuild:
    return write_mini(Path(tmp_path_factory.mktemp("mini")))


@pytest.fixture(scope="session")
def single_process(mini: MiniBuild, tmp_path_factory) -> tuple[dict[str, str], dict[str, Any]]:
    """The reference: the mini build in one process, as `gen build` runs it by default."""
    out = mini.run_in_process(Path(tmp_path_factory.mktemp("single")) / "out")
    fingerprint = build_fingerprint(out)
    assert fingerprint[1]["counts"]["kept"] > 0, "the reference build kept no rows"
    return fingerprint
