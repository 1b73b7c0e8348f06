"""Run a sweep's job list on an engine: `local` (this machine, one job after another), `ray` (a Ray
cluster, or a Ray instance started here) or `slurm` (a Slurm job array, through submitit).

A job list is what the sweeps print with PRINT_JOBS=1, one job per line:

    cd DIR && VAR=... bash .../run_experiment.sh [ARGS]

one run.py process each (one run, or a pack of runs). The list is the whole plan; an engine only
runs its lines. What is done is read from the results log, never from an engine: a job is done when
the log holds every run it makes (run identity, as run.py --skip_done decides it). Every job passes
--skip_done, and run.py appends a record under the log's lock after checking the log again, so a
job that runs twice (a retried Ray task, a requeued Slurm task, a rerun sweep) logs each run once.

Beside the job list, `<job list>.state/` keeps each job's files, named by a hash of its line:
KEY.err (its stderr, a `--- attempt` line at each start), KEY.out (its stdout, ray and slurm),
KEY.exit (exit status, start and end time); `slurm/` holds submitit's files. On a cluster it must
be on a folder every node shares, as the code, the data and the log.

A job runs in a process group of its own under a small bash guard (GUARD), which gets SIGTERM when
the process that started it dies (PR_SET_PDEATHSIG) and then passes it to the whole group: a killed
Ray worker, a cancelled Slurm task or a stopped launcher leaves no run behind to write a record late.
A run killed outright (SIGKILL of every process, a failed node) leaves its temporary output folder;
the next launch of its job list removes it (remove_abandoned_outputs).
"""
import glob
import hashlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from src.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
_WORD = r"(?:\\.|[^\s\\])+"  # one shell word as printf %q writes it
JOB_LINE = re.compile(rf"cd {_WORD} && (?P<env>.*?) ?bash {_WORD}experiment\.sh(?: .*)?")
# Runs the job line (in a process group of its own) to its end. A TERM that finds the process that
# started it dead (PR_SET_PDEATHSIG) goes on to the whole group; one sent to the whole group (Ctrl-C
# here, Slurm's scancel) is not sent again, so that the scripts' cleanup on TERM is not cut short.
GUARD = ('trap \'kill -0 $PPID 2>/dev/null || { trap - TERM; kill -TERM 0; }\' TERM; eval "$1" & job=$!; '
         'until wait $job; status=$?; ! kill -0 $job 2>/dev/null; do :; done; exit $status')
# A job line with PRINT_ARGS=1 prints its run.py arguments, NUL-terminated; then its folder.
DESCRIBE = 'export PRINT_ARGS=1; eval "$1" && printf "%s\\0" "$PWD"'
SLURM_POLL_S = 5  # how often the Slurm engine asks squeue which array tasks are still alive
# (job, exit status or None when the engine lost it, error line or None)
Finished = Tuple["Job", Optional[int], Optional[str]]


@dataclass
class Job:
    """One line of a job list and what it runs."""
    line: str
    argv: List[str] = field(default_factory=list)  # the run.py arguments the line prints
    runs: List[List[str]] = field(default_factory=list)  # those of each run (several in a pack)
    folder: str = "."  # where the line's `cd` goes: relative paths of its runs start there
    setup_error: Optional[str] = None  # why the line cannot start a run (its script's error line)
    setup_exit: int = 0

    @property
    def key(self) -> str:
        return hashlib.sha1(self.line.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """The line's variables (TASK=... SEED=...): what tells the jobs of a sweep apart."""
        return JOB_LINE.fullmatch(self.line)["env"]

    def logs(self) -> List[str]:
        return sorted({os.path.abspath(os.path.join(self.folder, log_of(run))) for run in self.runs})


def option(argv: Sequence[str], name: str, default: str) -> str:
    """The value of a run.py option in an argument list (the last one given)."""
    value = default
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def log_of(run: Sequence[str]) -> str:
    return option(run, "--log_file", "log")


def last_error(text: str) -> Optional[str]:
    """The line that says what went wrong: the last `error:` line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [None])[-1]


# ---- the job list ---------------------------------------------------------------------------

def read_job_list(path: str) -> List[str]:
    """The job lines of a file (`-`: standard input), each checked to be a line of the sweeps."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the job list {path}: {error}") from None
    lines = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not JOB_LINE.fullmatch(line.strip()):
            raise UserError(f"{path}:{number}: not a job line of the sweeps (`cd DIR && VAR=... bash "
                            f".../run_experiment.sh ...`, as PRINT_JOBS=1 prints them): {line[:100]}")
        lines.setdefault(line.strip(), number)
    return list(lines)


def describe(line: str) -> Job:
    """A line's job: its runs' run.py arguments, as the line itself prints them with PRINT_ARGS=1."""
    from src.multirun import expand_argv
    printed = subprocess.run(["bash", "-c", DESCRIBE, "job", line], capture_output=True)
    if printed.returncode != 0:
        error = last_error(printed.stderr.decode(errors="replace")) or f"its setup failed (exit {printed.returncode})"
        return Job(line, setup_error=error, setup_exit=printed.returncode)
    *argv, folder = printed.stdout.decode().split("\0")[:-1]
    try:
        return Job(line, argv, expand_argv(argv), folder)
    except UserError as error:
        return Job(line, argv, folder=folder, setup_error=f"error: {error}", setup_exit=2)


def describe_all(lines: Sequence[str]) -> List[Job]:
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        return list(pool.map(describe, lines))
    finally:
        pool.shutdown(cancel_futures=True)  # at once on Ctrl-C


def _experiment_class():
    """run.py's Experiment: its arguments_record is what a run's record holds."""
    if "run" not in sys.modules:
        import importlib.util
        spec = importlib.util.spec_from_file_location("run", ROOT / "run.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["run"] = module
        spec.loader.exec_module(module)
    return sys.modules["run"].Experiment


def logged_keys(jobs: Sequence[Job]) -> set:
    """The keys of the jobs whose every run is in the results log (run identity, as --skip_done)."""
    from src.arguments import parse_args
    from src.results import read_results, run_identity
    experiment, logged, done, here = _experiment_class(), {}, set(), os.getcwd()
    for job in jobs:
        if not job.runs:
            continue
        try:
            os.chdir(job.folder)
            for run in job.runs:
                log = os.path.abspath(log_of(run))
                if log not in logged:
                    logged[log] = ({repr(run_identity(r)) for r in read_results(log)} if os.path.isfile(log)
                                   else set())
                if repr(run_identity(experiment(*parse_args(run)).arguments_record())) not in logged[log]:
                    break
            else:
                done.add(job.key)
        except (Exception, SystemExit):  # not done: the run itself will say what is wrong
            pass
        finally:
            os.chdir(here)
    return done


def remove_abandoned_outputs(jobs: Sequence[Job]) -> None:
    """Remove the temporary output folders that killed runs of these jobs left. run_experiment.sh makes
    `<--output_dir>.tmp-XXXXXX` and holds a lock on it while it or its run.py lives: a folder whose lock
    is free is abandoned (it may hold a whole delta). A kept output (KEEP_RESULT=1) has no `.tmp-`."""
    import fcntl
    for job in jobs:
        if not job.argv:
            continue
        output_dir = os.path.join(job.folder, option(job.argv, "--output_dir", ""))
        for folder in Path(output_dir).parent.glob(glob.escape(Path(output_dir).name) + ".tmp-??????"):
            try:
                handle = os.open(folder, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
            except OSError:  # held: its run is still going
                pass
            finally:
                os.close(handle)


def jobs_text(count: int) -> str:
    return f"{count} job" + "s" * (count != 1)


def run_unit(jobs: Sequence[Job]) -> str:
    """How the header counts jobs: `runs`, or `packs of up to K runs`."""
    most = max((len(job.runs) for job in jobs), default=1)
    return "runs" if most <= 1 else f"packs of up to {most} runs"


# ---- one job --------------------------------------------------------------------------------

_LIBC = None


def _die_with_parent():
    """In the child before exec: get SIGTERM when the thread that started it ends (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_job(line: str, state: str, key: str, echo: bool = False) -> int:
    """Run one job line and return its exit status. Its stderr goes to STATE/KEY.err (and to ours
    with `echo`; without, its stdout to KEY.out); its exit status and times to KEY.exit."""
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        import ctypes
        _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child must not import after fork
    folder = Path(state)
    started = time.time()
    with open(folder / f"{key}.err", "ab") as err, open(os.devnull if echo else folder / f"{key}.out", "ab") as out:
        job = subprocess.Popen(["bash", "-c", GUARD, "job", line], stdout=None if echo else out,
                               stderr=subprocess.PIPE if echo else err, start_new_session=True,
                               preexec_fn=_die_with_parent)
        err.write(f"--- attempt on {socket.gethostname()}: pid {os.getpid()}, job group {job.pid}\n".encode())
        err.flush()
        try:
            _echo(job.stderr, err)
            code = job.wait()
        except BaseException:  # Ctrl-C or the engine stopping this process: stop the job with it
            try:
                os.killpg(job.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            _echo(job.stderr, err)  # until the whole group has ended (its scripts clean up on TERM)
            job.wait()
            raise
    _write(folder / f"{key}.exit", f"{code} {started:.3f} {time.time():.3f}\n")
    return code


def _echo(stream, err) -> None:
    """Copy a job's stderr pipe (when there is one) to ours and to its .err file, until it closes."""
    for chunk in stream or ():
        sys.stderr.write(chunk.decode(errors="replace"))
        sys.stderr.flush()
        err.write(chunk)
        err.flush()


def run_jobs(jobs: Sequence[Tuple[str, str]], state: str) -> List[int]:
    """Run several (line, key) at once (RUNS_PER_GPU jobs sharing one Slurm task's GPU)."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: run_job(job[0], state, job[1]), jobs))


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def exit_record(state: Path, job: Job) -> Optional[Tuple[int, float]]:
    """(exit status, seconds it ran) of a job's last finished attempt, or None."""
    try:
        code, started, ended = (state / f"{job.key}.exit").read_text().split()
        return int(code), float(ended) - float(started)
    except (OSError, ValueError):
        return None


def error_line(state: Path, job: Job) -> Optional[str]:
    try:
        return last_error((state / f"{job.key}.err").read_text(errors="replace"))
    except OSError:
        return None


# ---- engines --------------------------------------------------------------------------------

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
                raise UserError(f"--address (RAY_ADDRESS) {address}: cannot reach a Ray cluster there ({error})") from None

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
                        yield job, None, f"its Slurm task {task} ended without finishing it (cancelled, timed out or its node failed)"
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


# ---- the sweep ------------------------------------------------------------------------------

def state_folder(jobs_file: str) -> Path:
    return Path(f"{jobs_file}.state")


class Progress:
    """One line per finished job with the counts so far; the failures again at the end."""

    def __init__(self, jobs: Sequence[Job], state: Path, engine: str):
        self.jobs, self.state, self.engine = jobs, state, engine
        self.finished, self.failed = set(), []
        self.started = time.time()

    def report(self, job: Job, code: Optional[int], error: Optional[str]) -> None:
        self.finished.add(job.key)
        running = sum(1 for other in self.jobs
                      if other.key not in self.finished and (self.state / f"{other.key}.err").exists())
        if code != 0:
            self.failed.append(f"{job.label} ({'lost' if code is None else f'exit {code}'})")
        counts = (f"[{len(self.finished) - len(self.failed)} done, {running} running, {len(self.failed)} failed, "
                  f"{len(self.jobs) - len(self.finished) - running} pending]")
        if code == 0:
            print(f"{counts} ok: {job.label}", file=sys.stderr, flush=True)
            return
        print(f"{counts} FAILED ({'lost' if code is None else f'exit {code}'}): {job.label}", file=sys.stderr)
        print(f"    {error or error_line(self.state, job)}", file=sys.stderr, flush=True)

    def summary(self) -> int:
        ran = sum(record[1] for job in self.jobs if (record := exit_record(self.state, job)))
        print(f"{jobs_text(len(self.finished))} ended in {time.time() - self.started:.1f} s on {self.engine} "
              f"(the jobs themselves ran {ran:.1f} s; stderr of each: {self.state}/)", file=sys.stderr)
        if not self.failed:
            return 0
        print(f"\n{len(self.failed)} of {len(self.jobs)} {'runs' if run_unit(self.jobs) == 'runs' else 'jobs'} "
              "failed:", file=sys.stderr)
        for line in self.failed:
            print(f"  {line}", file=sys.stderr)
        return 1


def pack_warning(jobs: Sequence[Job], engine: Engine) -> None:
    if any(len(job.runs) > 1 for job in jobs) and not engine.has_gpu():
        where = "this machine has" if engine.name == "local" else f"the {engine.name} jobs get"
        print(f"warning: PACK > 1, but {where} no GPU: on CPU packed runs are slower than the same runs one "
              "after another (0.79-0.89x measured, README 'Speed'); use PACK=1 there", file=sys.stderr)


def launch(jobs_file: str, engine: Engine) -> int:
    """Run the jobs of a job list that the results log does not hold yet; 0 when all succeeded."""
    jobs = describe_all(read_job_list(jobs_file))
    done = logged_keys(jobs)
    remove_abandoned_outputs(jobs)
    pending = [job for job in jobs if job.key not in done]
    logs = sorted({log for job in jobs for log in job.logs()}) or ["the log"]
    print(f"{jobs_file}: {len(jobs)} {run_unit(jobs)}, {len(pending)} not in {', '.join(logs)} yet "
          f"(engine {engine.name})", file=sys.stderr, flush=True)
    if not pending:
        return 0
    startable = [job for job in pending if not job.setup_error]
    engine.check(max(1, len(startable)))
    state = state_folder(jobs_file)
    state.mkdir(parents=True, exist_ok=True)
    for job in pending:
        for suffix in (".err", ".out", ".exit"):
            (state / f"{job.key}{suffix}").unlink(missing_ok=True)
    progress = Progress(pending, state, engine.name)
    blocked = [job for job in pending if job.setup_error]
    for job in blocked[:1] if len(blocked) == len(pending) else blocked:  # failed without starting
        (state / f"{job.key}.err").write_text(job.setup_error + "\n")
        _write(state / f"{job.key}.exit", f"{job.setup_exit} {time.time():.3f} {time.time():.3f}\n")
        progress.report(job, job.setup_exit, job.setup_error)
    if len(blocked) == len(pending):
        print("error: stopping the sweep: no remaining run can start (see above); fix that and rerun to resume",
              file=sys.stderr)
        return progress.summary()
    engine.start()
    interrupted = True  # until the engine has run every job (Ctrl-C: KeyboardInterrupt, tools/launch.py)
    try:
        pack_warning(startable, engine)
        for job, code, error in engine.run(startable, state):
            progress.report(job, code, error)
        interrupted = False
    finally:
        engine.close(interrupted)
    return progress.summary()


def pending_lines(jobs_file: str) -> List[str]:
    jobs = describe_all(read_job_list(jobs_file))
    done = logged_keys(jobs)
    return [job.line for job in jobs if job.key not in done]


def status(jobs_file: str) -> int:
    """Print what is done, failed (with its error line), started and pending; 0 when all is done."""
    jobs = describe_all(read_job_list(jobs_file))
    done, state = logged_keys(jobs), state_folder(jobs_file)
    rows = {"failed": [], "started": [], "pending": []}
    for job in jobs:
        if job.key in done:
            continue
        finished = exit_record(state, job)
        if finished:
            rows["failed"].append(f"failed (exit {finished[0]}): {job.label}\n    {error_line(state, job)}")
        elif (state / f"{job.key}.err").exists():
            rows["started"].append(f"started (running, or stopped before it ended): {job.label}")
        else:
            rows["pending"].append(f"pending: {job.label}")
    print(f"{jobs_file}: {jobs_text(len(jobs))}: {len(done)} done, "
          + ", ".join(f"{len(lines)} {name}" for name, lines in rows.items()))
    for lines in rows.values():
        for line in lines:
            print(line)
    return 0 if len(done) == len(jobs) else 1
