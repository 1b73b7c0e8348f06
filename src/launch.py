"""Run a sweep's job list on an engine (src/engines.py: `local`, this machine, one job after another;
`ray`, a Ray cluster or a Ray instance started here; `slurm`, a Slurm job array through submitit).

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
from typing import List, Optional, Sequence, Tuple

from src.errors import UserError

_WORD = r"(?:\\.|[^\s\\])+"  # one shell word as printf %q writes it
JOB_LINE = re.compile(rf"cd {_WORD} && (?P<env>.*?) ?bash {_WORD}experiment\.sh(?: .*)?")
# Runs the job line (in a process group of its own) to its end. A TERM that finds the process that
# started it dead (PR_SET_PDEATHSIG) goes on to the whole group; one sent to the whole group (Ctrl-C
# here, Slurm's scancel) is not sent again, so that the scripts' cleanup on TERM is not cut short.
GUARD = ('trap \'kill -0 $PPID 2>/dev/null || { trap - TERM; kill -TERM 0; }\' TERM; eval "$1" & job=$!; '
         'until wait $job; status=$?; ! kill -0 $job 2>/dev/null; do :; done; exit $status')
# A job line with PRINT_ARGS=1 prints its run.py arguments, NUL-terminated; then its folder.
DESCRIBE = 'export PRINT_ARGS=1; eval "$1" && printf "%s\\0" "$PWD"'


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


def logged_keys(jobs: Sequence[Job]) -> set:
    """The keys of the jobs whose every run is in the results log (run identity, as --skip_done)."""
    from src.arguments import parse_args
    from src.experiment import Experiment
    from src.identity import run_identity
    from src.results import read_results
    logged, done, here = {}, set(), os.getcwd()
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
                if repr(run_identity(Experiment(*parse_args(run)).arguments_record())) not in logged[log]:
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
        how = "lost" if code is None else f"exit {code}"
        if code != 0:
            self.failed.append(f"{job.label} ({how})")
        counts = (f"[{len(self.finished) - len(self.failed)} done, {running} running, {len(self.failed)} failed, "
                  f"{len(self.jobs) - len(self.finished) - running} pending]")
        if code == 0:
            print(f"{counts} ok: {job.label}", file=sys.stderr, flush=True)
            return
        print(f"{counts} FAILED ({how}): {job.label}", file=sys.stderr)
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


def read_jobs(jobs_file: str) -> Tuple[List[Job], set]:
    """The jobs of a job list, and the keys of those the results log holds."""
    jobs = describe_all(read_job_list(jobs_file))
    return jobs, logged_keys(jobs)


def pack_warning(jobs: Sequence[Job], engine) -> None:
    if any(len(job.runs) > 1 for job in jobs) and not engine.has_gpu():
        where = "this machine has" if engine.name == "local" else f"the {engine.name} jobs get"
        print(f"warning: PACK > 1, but {where} no GPU: on CPU packed runs are slower than the same runs one "
              "after another (0.79-0.89x measured, README 'Speed'); use PACK=1 there", file=sys.stderr)


def launch(jobs_file: str, engine) -> int:
    """Run the jobs of a job list that the results log does not hold yet on an engine (src/engines.py);
    0 when all succeeded."""
    jobs, done = read_jobs(jobs_file)
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
    jobs, done = read_jobs(jobs_file)
    return [job.line for job in jobs if job.key not in done]


def status(jobs_file: str) -> int:
    """Print what is done, failed (with its error line), started and pending; 0 when all is done."""
    (jobs, done), state = read_jobs(jobs_file), state_folder(jobs_file)
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
