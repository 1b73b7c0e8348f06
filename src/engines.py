"""The engines a job list runs on (src/launch.py decides what to run and reports it): each checks its
options before anything starts and yields the jobs as they finish.

    local   this machine, one job after another, their output on the terminal
    ray     one Ray task per job on a Ray cluster (--address / RAY_ADDRESS; `auto`: the one this machine
            belongs to) or on a Ray instance started here; retried when its worker or node dies
    slurm   one Slurm job array through submitit, RUNS_PER_GPU jobs per array task (sharing its GPU);
            what runs is asked of squeue (no accounting needed)
"""
import math
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from src.errors import UserError
from src.launch import Job, exit_record, run_job, run_jobs

SLURM_POLL_S = 5  # how often the Slurm engine asks squeue which array tasks are still alive
# (job, exit status or None when the engine lost it, error line or None)
Finished = Tuple[Job, Optional[int], Optional[str]]


class Engine:
    """Checks its options when made (before anything starts); `check(count)` may ask the cluster;
    `run` yields each job as it finishes."""
    name = ""

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

    def __init__(self, options):
        super().__init__(options)
        address = options.address
        if address and address != "auto":
            where = re.fullmatch(r"\[?([^\s/\[\]]+?)\]?:(\d+)", address)
            if not where:
                raise UserError(f"--address (RAY_ADDRESS) must be HOST:PORT (the head's GCS port) or auto, "
                                f"got {address!r}")
            try:
                socket.create_connection((where[1], int(where[2])), timeout=5).close()
            except OSError as error:
                raise UserError(f"--address (RAY_ADDRESS) {address}: cannot reach a Ray cluster there "
                                f"({error})") from None

    def start(self):
        import ray
        local = {} if self.options.address else {"object_store_memory": 200 * 2 ** 20}
        try:
            ray.init(address=self.options.address or "local", include_dashboard=False, log_to_driver=False, **local)
        except ConnectionError as error:
            raise UserError(f"--address (RAY_ADDRESS) {self.options.address}: {error}") from None

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
    SBATCH = ("partition", "gres", "account")

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
                for key, (job, task) in list(waiting.items()):
                    if alive is not None and task not in alive and exit_record(state, job) is None:
                        del waiting[key]
                        yield job, None, (f"its Slurm task {task} ended without finishing it (cancelled, timed out "
                                          "or its node failed)")
            time.sleep(1)

    def alive(self) -> Optional[set]:
        """The array's tasks Slurm still holds (pending or running), or None when squeue fails."""
        listed = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={self.array}", "--format=%i"],
                                capture_output=True, text=True)
        return set(listed.stdout.split()) if listed.returncode == 0 else None

    def close(self, interrupted):
        if interrupted and self.array:
            print(f"note: Slurm job array {self.array} goes on (scancel {self.array} stops it)", file=sys.stderr)


ENGINES = {engine.name: engine for engine in (Local, Ray, Slurm)}
