"""The jobs of a sweep's job list, one at a time: what a line is, what it runs, running it, and its files.

A job list is what the sweeps print with PRINT_JOBS=1, one job per line:

    cd DIR && VAR=... bash .../run_experiment.sh [ARGS]

every word literal, as `printf %q` writes it (no `$(...)`, no `;`): a line is parsed, never trusted, and
describing it (its run.py arguments, as the line prints them with PRINT_ARGS=1) runs only the project's
script. One line is one run.py process (one run, or a pack of runs).

Beside the job list, `<job list>.state/` keeps each job's files, named by a hash of its line:
KEY.err (its stderr, a `--- attempt` line at each start), KEY.out (its stdout, ray and slurm),
KEY.exit (exit status, start and end time); `slurm/` holds submitit's files.

A job runs in a process group of its own under a small bash guard (GUARD). The guard's standard input
is a pipe whose other end only the process that started it holds: when that process dies, however it
dies, the pipe reaches its end and the guard's watcher sends TERM to the whole group, so a killed
launcher, Ray worker or Slurm task leaves no run behind to write a record late. (The end of a pipe
cannot race with anything: the kernel closes a dead process's files before anyone can reap it.)
"""
import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from src.errors import UserError
from src.multirun import expand_argv, flag_value

# One shell word as printf %q writes it: escaped characters, $'...', '' and characters %q leaves alone.
_WORD = r"(?:\\.|\$'(?:\\.|[^'\\])*'|''|[\w%+\-./:=@~]|[^\x00-\x7f])+"
JOB_LINE = re.compile(rf"cd {_WORD} && (?P<env>(?:[A-Za-z_]\w*=(?:{_WORD})? )*)bash {_WORD}experiment\.sh"
                      rf"(?: {_WORD})*", re.ASCII)
# The kernel takes at most 128 KiB as one argument (a job line is one); the sweeps' lines are under 2 kB.
LINE_MAX_BYTES = 65536
# Runs the job line (fd 0: the pipe from the process that started it) in the background to its end.
# The watcher reads the pipe: at its end (that process died) it sends TERM to the whole group. A TERM
# sent to the whole group (Ctrl-C here, Slurm's scancel) stops the watcher, and the guard waits on.
GUARD = ('exec 3<&0 </dev/null; trap : TERM; { read -r -u 3 _; kill -TERM 0; } >/dev/null 2>&1 & watcher=$!; '
         'eval "$1" 3<&- & job=$!; until wait $job; status=$?; ! kill -0 $job 2>/dev/null; do :; done; '
         'kill $watcher 2>/dev/null; exit $status')
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
        return JOB_LINE.fullmatch(self.line)["env"].rstrip()

    def logs(self) -> List[str]:
        return sorted({os.path.abspath(os.path.join(self.folder, log_of(run))) for run in self.runs})


def log_of(run: Sequence[str]) -> str:
    return flag_value(run, "--log_file", "log")


def last_error(text: str) -> Optional[str]:
    """The line that says what went wrong: the last `error:` line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [None])[-1]


# ---- the job list ---------------------------------------------------------------------------

def read_job_list(path: str) -> List[str]:
    """The job lines of a file (`-`: standard input), each checked to be a line of the sweeps."""
    try:
        if path == "-":
            text = sys.stdin.read()
        elif not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block; <(...) has no folder for state
            raise UserError(f"the job list {path} is not a regular file (a FIFO, a process substitution or a "
                            "device): write it to a file (its state folder goes beside it), or pass `-` with --pending")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the job list {path}: {error}") from None
    lines = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(line.encode()) > LINE_MAX_BYTES:
            raise UserError(f"{path}:{number}: a job line of {len(line.encode())} bytes (at most {LINE_MAX_BYTES}; "
                            "the sweeps' lines are under 2 kB)")
        if "\0" in line or not JOB_LINE.fullmatch(line.strip()):
            raise UserError(f"{path}:{number}: not a job line of the sweeps (`cd DIR && VAR=... bash "
                            f".../run_experiment.sh ...`, as PRINT_JOBS=1 prints them, every word literal): "
                            f"{line[:100]!r}")
        lines.setdefault(line.strip(), number)
    return list(lines)


def describe(line: str) -> Job:
    """A line's job: its runs' run.py arguments, as the line itself prints them with PRINT_ARGS=1."""
    printed = subprocess.run(["bash", "-c", DESCRIBE, "job", line], capture_output=True)
    if printed.returncode != 0:
        error = last_error(printed.stderr.decode(errors="replace")) or f"its setup failed (exit {printed.returncode})"
        return Job(line, setup_error=error, setup_exit=printed.returncode)
    *argv, folder = printed.stdout.decode().split("\0")[:-1]
    try:
        return Job(line, argv, expand_argv(argv), folder)
    except UserError as error:
        return Job(line, argv, folder=folder, setup_error=f"error: {error}", setup_exit=2)


# ---- one job --------------------------------------------------------------------------------

def run_job(line: str, state: str, key: str, echo: bool = False) -> int:
    """Run one job line and return its exit status. Its stderr goes to STATE/KEY.err (and to ours
    with `echo`; without, its stdout to KEY.out); its exit status and times to KEY.exit."""
    folder = Path(state)
    started = time.time()
    with open(folder / f"{key}.err", "ab") as err, open(os.devnull if echo else folder / f"{key}.out", "ab") as out:
        alive, held = os.pipe()  # `held` stays open while this process lives (not inherited: close-on-exec)
        try:
            job = subprocess.Popen(["bash", "-c", GUARD, "job", line], stdin=alive, stdout=None if echo else out,
                                   stderr=subprocess.PIPE if echo else err, start_new_session=True)
        except BaseException:
            os.close(held)
            raise
        finally:
            os.close(alive)
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
        finally:
            os.close(held)
    write_file(folder / f"{key}.exit", f"{code} {started:.3f} {time.time():.3f}\n")
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


# ---- the state folder -----------------------------------------------------------------------

def state_folder(jobs_file: str) -> Path:
    return Path(f"{jobs_file}.state")


def write_file(path: Path, text: str) -> None:
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
