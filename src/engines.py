"""The engines a job list runs on (src/launch.py decides what to run and reports it; src/jobs.py runs
one job): each checks its options before anything starts and yields the jobs as they finish. An engine
is one class, its options an `Options` dataclass (tools/launch.py makes their flags), and one entry in
ENGINES.

    local   this machine, one job after another, their output on the terminal
    ray     one Ray task per job on a Ray cluster (--address / RAY_ADDRESS; `auto`: the one this machine
            belongs to) or on a Ray instance started here; retried when its worker or node dies
    slurm   one Slurm job array through submitit, RUNS_PER_GPU jobs per array task (sharing its GPU);
            what runs is asked of squeue (no accounting needed)
"""
import argparse
import dataclasses
import math
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from src.checks import at_least, between, typed
from src.errors import UserError
from src.jobs import Job, exit_record, run_job, run_jobs

SLURM_POLL_S = 5  # how often the Slurm engine asks squeue which array tasks are still alive
# (job, exit status or None when the engine lost it, error line or None)
Finished = Tuple[Job, Optional[int], Optional[str]]


def setting(default: Any, help: str, env: Optional[str] = None, parse: Optional[Callable[[str], Any]] = None) -> Any:
    """An engine option (tools/launch.py makes its flag `--name-with-dashes`): its default, help text, the
    environment variable that gives its default, and how its text is read and checked (argparse `type=`)."""
    return dataclasses.field(default=default, metadata={"help": help, "env": env, "parse": parse})


def slurm_minutes(text: str) -> int:
    """A Slurm time limit (MINUTES, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in whole minutes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"must be a Slurm time (minutes, H:M:S or D-H:M:S), got {text!r}")
    days, first, second, third = (int(part) if part else 0 for part in match.groups())
    if match[1] or match[4] is not None:  # D-H[:M[:S]] or H:M:S
        hours, minutes, seconds = first, second, third
    else:  # MINUTES or M:S
        hours, minutes, seconds = 0, first, second
    total = (days * 24 + hours) * 60 + minutes + (seconds > 0)
    if total < 1:
        raise argparse.ArgumentTypeError(f"must be at least one minute, got {text!r}")
    return total


class Engine:
    """Checks its options when made (before anything starts); `check(count)` may ask the cluster;
    `start` may still refuse the jobs (UserError, having stopped what it started); `run` yields each job
    as it finishes. `Options`: its options (tools/launch.py makes their flags); those of this class are
    every engine's."""
    name = ""
    title = ""  # its help group's title (default: its name)

    @dataclass(frozen=True)
    class Options:
        runs_per_gpu: int = setting(1, "jobs sharing one GPU: ray num_gpus=1/R; slurm: R jobs per array task and "
                                    "its GPU", "RUNS_PER_GPU", typed(int, at_least(1)))
        cpus_per_job: Optional[int] = setting(None, "CPUs per job (default: ray 1, slurm the cluster's default)",
                                              "CPUS_PER_JOB", typed(int, at_least(1)))

    def __init__(self, options):
        self.options = options

    def check(self, count: int) -> None:
        """Refuse what the cluster would refuse, before anything is started."""

    def start(self) -> None:
        pass

    def has_gpu(self) -> bool:
        raise NotImplementedError

    def run(self, jobs: Sequence[Job], state: Path) -> Iterator[Finished]:
        raise NotImplementedError

    def close(self, interrupted: bool) -> None:
        pass


class Local(Engine):
    """This machine, one job after another; the jobs' output goes to the terminal."""
    name = "local"

    def has_gpu(self):
        import torch
        return torch.cuda.is_available()

    def run(self, jobs, state):
        for number, job in enumerate(jobs, 1):
            print(f"=== [{number}/{len(jobs)}] {job.label}", file=sys.stderr, flush=True)
            yield job, run_job(job.line, str(state), job.key, echo=True), None


class Ray(Engine):
    """One Ray task per job, retried when its worker or node dies. --address / RAY_ADDRESS joins a
    cluster (`auto`: the one this machine belongs to); without, a Ray instance starts here."""
    name = "ray"
    PROBE_S = 5  # how long the address may take to answer as a gRPC server (Ray's own retries take minutes)

    @dataclass(frozen=True)
    class Options(Engine.Options):
        address: Optional[str] = setting(None, "the Ray cluster to join: HOST:PORT of its head or auto; default: "
                                         "start a Ray instance on this machine", "RAY_ADDRESS")
        retries: int = setting(3, "times a job is run again when its worker or node dies (3)",
                               parse=typed(int, between(0, 100, integer=True)))

    def __init__(self, options):
        super().__init__(options)
        address = options.address
        if address and address != "auto":
            where = re.fullmatch(r"\[?([^\s/\[\]]+?)\]?:(\d+)", address)
            if not where:
                raise UserError(f"--address (RAY_ADDRESS) must be HOST:PORT (the head's GCS port) or auto, "
                                f"got {address!r}")
            self.probe(where[1], int(where[2]))

    def probe(self, host: str, port: int) -> None:
        """A Ray head's GCS port is a gRPC (HTTP/2) server: it answers the HTTP/2 preface with a SETTINGS frame."""
        try:
            with socket.create_connection((host, port), timeout=self.PROBE_S) as connection:
                connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
                answer = b""
                while len(answer) < 9 and (chunk := connection.recv(9 - len(answer))):
                    answer += chunk
        except socket.timeout:
            answer = b""
        except OSError as error:
            raise UserError(f"--address (RAY_ADDRESS) {self.options.address}: cannot reach a Ray cluster there "
                            f"({error})") from None
        if len(answer) < 9 or answer[3] != 4:
            raise UserError(f"--address (RAY_ADDRESS) {self.options.address}: something listens there, but not a "
                            f"Ray cluster (no gRPC answer within {self.PROBE_S} s); give the head's GCS port "
                            "(`ray start --head` prints it, 6379 by default)")

    def start(self):
        import ray
        local = {} if self.options.address else {"object_store_memory": 200 * 2 ** 20}
        try:
            ray.init(address=self.options.address or "local", include_dashboard=False, log_to_driver=False, **local)
        except ConnectionError as error:
            raise UserError(f"--address (RAY_ADDRESS) {self.options.address}: {error}") from None
        most = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
        if self.options.cpus_per_job and self.options.cpus_per_job > most:
            ray.shutdown()
            raise UserError(f"--cpus-per-job {self.options.cpus_per_job}: no node of the Ray cluster has that many "
                            f"CPUs (the most is {most:g}), so no job could ever start")

    def has_gpu(self):
        import ray
        return ray.cluster_resources().get("GPU", 0) > 0

    def run(self, jobs, state):
        import ray
        gpus = 1 / self.options.runs_per_gpu if self.has_gpu() else 0
        task = ray.remote(run_job).options(num_cpus=self.options.cpus_per_job or 1, num_gpus=gpus,
                                           max_retries=self.options.retries)
        waiting = {task.remote(job.line, str(state), job.key): job for job in jobs}
        while waiting:
            [ready], _ = ray.wait(list(waiting), num_returns=1)
            job = waiting.pop(ready)
            try:
                yield job, ray.get(ready), None
            except ray.exceptions.RayError as error:
                yield job, None, f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"

    def close(self, interrupted):
        import ray
        ray.shutdown()  # a local instance stops; the tasks of this driver end with it


class SlurmTask:
    """One array task: its jobs at once. `checkpoint` makes submitit requeue it when it reaches its
    time limit (as Slurm requeues a preempted task); run again, each job skips its logged runs."""

    def __call__(self, jobs, state):
        return run_jobs(jobs, state)

    def checkpoint(self, jobs, state):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, jobs, state)


class Slurm(Engine):
    """One array task per job (RUNS_PER_GPU jobs per task, sharing its GPU), through submitit."""
    name = "slurm"
    title = "slurm (sbatch options; their SBATCH_* variables are read too)"
    SBATCH = ("partition", "gres", "account")
    # squeue's reasons for a pending task that Slurm will never start
    NEVER_STARTS = ("PartitionTimeLimit", "AssocMaxWallDurationPerJobLimit", "QOSMaxWallDurationPerJobLimit")

    @dataclass(frozen=True)
    class Options(Engine.Options):
        partition: Optional[str] = setting(None, "", "SBATCH_PARTITION")
        gres: Optional[str] = setting(None, "e.g. gpu:1 (one GPU per array task)", "SBATCH_GRES")
        account: Optional[str] = setting(None, "", "SBATCH_ACCOUNT")
        time: Optional[int] = setting(None, "time limit per array task (required; within the partition's); a task "
                                      "that reaches it is requeued and resumes its job", "SBATCH_TIMELIMIT",
                                      slurm_minutes)
        array_parallelism: int = setting(256, "array tasks running at once (256)",
                                         parse=typed(int, at_least(1)))

    def __init__(self, options):
        super().__init__(options)
        self.array = None  # the job array's id, once submitted
        if not shutil.which("sbatch"):
            raise UserError("ENGINE slurm: sbatch is not on PATH (run the sweep on a Slurm login node)")
        if options.time is None:
            raise UserError("ENGINE slurm needs a time limit per array task: --time or SBATCH_TIMELIMIT "
                            "(e.g. 4:00:00, within the partition's limit)")

    def tasks(self, count: int) -> int:
        return math.ceil(count / self.options.runs_per_gpu)

    def flags(self, count: int) -> List[str]:
        flags = [f"--{name}={getattr(self.options, name)}" for name in self.SBATCH if getattr(self.options, name)]
        flags += [f"--time={self.options.time}", f"--array=0-{self.tasks(count) - 1}%{self.options.array_parallelism}"]
        if self.options.cpus_per_job:
            flags.append(f"--cpus-per-task={self.options.cpus_per_job * self.options.runs_per_gpu}")
        return flags

    def check(self, count):
        flags = self.flags(count)
        test = subprocess.run(["sbatch", "--test-only", *flags, "--wrap", "true"], capture_output=True, text=True)
        if test.returncode != 0:
            said = "; ".join(line.strip() for line in test.stderr.splitlines() if line.strip())
            raise UserError(f"Slurm refuses {' '.join(flags)}: {said or f'sbatch exit {test.returncode}'}")
        limit = self.partition_limit()
        if limit is not None and self.options.time > limit[1]:
            raise UserError(f"--time (SBATCH_TIMELIMIT) {self.options.time} minutes is above partition {limit[0]}'s "
                            f"limit of {limit[1]} minutes: its tasks would wait forever (PartitionTimeLimit)")

    def partition_limit(self) -> Optional[Tuple[str, int]]:
        """(partition, its time limit in minutes) of the array's partition (given, else the default one),
        or None when it has none or sinfo does not say."""
        listed = subprocess.run(["sinfo", "--noheader", "--format=%P %l"], capture_output=True, text=True)
        for line in listed.stdout.splitlines() if listed.returncode == 0 else ():
            name, limit = (line.split() + [""])[:2]
            if name.rstrip("*") == self.options.partition or (not self.options.partition and name.endswith("*")):
                try:
                    return name.rstrip("*"), slurm_minutes(limit)
                except argparse.ArgumentTypeError:  # infinite, n/a
                    return None
        return None

    def has_gpu(self):
        return "gpu" in (self.options.gres or "")

    def run(self, jobs, state):
        import submitit
        per_task = self.options.runs_per_gpu
        groups = [jobs[i:i + per_task] for i in range(0, len(jobs), per_task)]
        executor = submitit.SlurmExecutor(folder=state / "slurm")
        cpus = {"cpus_per_task": self.options.cpus_per_job * per_task} if self.options.cpus_per_job else {}
        executor.update_parameters(job_name="delta-sweep", time=self.options.time,
                                   array_parallelism=self.options.array_parallelism, **cpus,
                                   **{name: getattr(self.options, name) for name in self.SBATCH
                                      if getattr(self.options, name)})
        tasks = executor.map_array(SlurmTask(), [[(job.line, job.key) for job in group] for group in groups],
                                   [str(state)] * len(groups))
        self.array = tasks[0].job_id.split("_")[0]
        print(f"Slurm job array {self.array}: {len(groups)} tasks (squeue -r -j {self.array}; "
              f"scancel {self.array} stops it)", file=sys.stderr, flush=True)
        waiting = {job.key: (job, task.job_id) for group, task in zip(groups, tasks) for job in group}
        asked = 0.0
        while waiting:
            for key, (job, _) in list(waiting.items()):
                if (finished := exit_record(state, job)) is not None:
                    del waiting[key]
                    yield job, finished[0], None
            if waiting and time.time() - asked > SLURM_POLL_S:
                asked, alive = time.time(), self.alive()
                self.refuse_stuck(alive or {})
                for key, (job, task) in list(waiting.items()):
                    if alive is not None and task not in alive and exit_record(state, job) is None:
                        del waiting[key]
                        yield job, None, (f"its Slurm task {task} ended without finishing it (cancelled, timed out "
                                          "or its node failed)")
            time.sleep(1)

    def alive(self) -> Optional[Dict[str, str]]:
        """The array's tasks Slurm still holds (pending or running), each with its reason, or None when squeue
        fails."""
        listed = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={self.array}", "--format=%i %r"],
                                capture_output=True, text=True)
        if listed.returncode != 0:
            return None
        return dict((line.split(maxsplit=1) + [""])[:2] for line in listed.stdout.splitlines() if line.strip())

    def refuse_stuck(self, alive: Dict[str, str]) -> None:
        """Cancel the array and say why when Slurm holds its tasks for a reason that never passes (a time
        limit above the partition's or the account's, which `sbatch --test-only` accepts)."""
        stuck = sorted({reason for reason in alive.values() if reason in self.NEVER_STARTS})
        if stuck:
            subprocess.run(["scancel", self.array], capture_output=True)
            array, self.array = self.array, None
            raise UserError(f"Slurm would never start the tasks of job array {array} ({', '.join(stuck)}: --time "
                            f"{self.options.time} minutes is above a limit of the partition or account); cancelled it")

    def close(self, interrupted):
        if interrupted and self.array:
            print(f"note: Slurm job array {self.array} goes on (scancel {self.array} stops it)", file=sys.stderr)


ENGINES = {engine.name: engine for engine in (Local, Ray, Slurm)}
