"""Run a sweep's job list on an engine (src/engines.py: `local`, this machine, one job after another;
`ray`, a Ray cluster or a Ray instance started here; `slurm`, a Slurm job array through submitit).

A job list (src/jobs.py: its lines, each job's process group and files) is the whole plan; an engine
only runs its lines. What is done is read from the results log, never from an engine: a job is done when
the log holds every run it makes (run identity, as run.py --skip_done decides it). Every job passes
--skip_done, and run.py appends a record under the log's lock after checking the log again, so a
job that runs twice (a retried Ray task, a requeued Slurm task, a rerun sweep) logs each run once.
The job list's state folder must be on a folder every node shares, as the code, the data and the log.

A run killed outright (SIGKILL of every process, a failed node) leaves its temporary output folder;
the next launch of its job list removes it (remove_abandoned_outputs).
"""
import fcntl
import glob
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from src.engines import Engine
from src.errors import UserError
from src.jobs import Job, describe, error_line, exit_record, log_of, read_job_list, state_folder, write_file
from src.multirun import flag_value


def describe_all(lines: Sequence[str]) -> List[Job]:
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        return list(pool.map(describe, lines))
    finally:
        pool.shutdown(cancel_futures=True)  # at once on Ctrl-C


def logged_runs(jobs: Sequence[Job], until_missing: bool = False) -> Dict[str, List[bool]]:
    """job key -> whether each of its runs is in its results log (run identity, as --skip_done); a run whose
    arguments do not parse counts as not logged (the run itself will say what is wrong). `until_missing`: a
    job's runs after its first one not logged count as not logged, unread (a run parses in about 0.1 s)."""
    from src.arguments import parse_args
    from src.experiment import Experiment
    from src.identity import run_identity
    from src.results import read_results
    logs, logged, here = {}, {}, os.getcwd()
    for job in jobs:
        flags = logged[job.key] = []
        try:
            os.chdir(job.folder)
            for run in job.runs:
                log = os.path.abspath(log_of(run))
                if log not in logs:
                    logs[log] = {repr(run_identity(r)) for r in read_results(log)} if os.path.isfile(log) else set()
                flags.append(repr(run_identity(Experiment(*parse_args(run)).arguments_record())) in logs[log])
                if until_missing and not flags[-1]:
                    break
        except (Exception, SystemExit):
            pass
        finally:
            flags.extend([False] * (len(job.runs) - len(flags)))
            os.chdir(here)
    return logged


def logged_keys(jobs: Sequence[Job]) -> set:
    """The keys of the jobs whose every run is in the results log."""
    return {key for key, flags in logged_runs(jobs, until_missing=True).items() if flags and all(flags)}


def remove_abandoned_outputs(jobs: Sequence[Job]) -> None:
    """Remove the temporary output folders that killed runs of these jobs left. run_experiment.sh makes
    `<--output_dir>.tmp-XXXXXX` and holds a lock on it while it or its run.py lives: a folder whose lock
    is free is abandoned (it may hold a whole delta). A kept output (KEEP_RESULT=1) has no `.tmp-`."""
    for job in jobs:
        if not job.argv:
            continue
        output_dir = os.path.join(job.folder, flag_value(job.argv, "--output_dir", ""))
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


# ---- the sweep ------------------------------------------------------------------------------

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


def pack_warning(jobs: Sequence[Job], engine: Engine) -> None:
    if any(len(job.runs) > 1 for job in jobs) and not engine.has_gpu():
        where = "this machine has" if engine.name == "local" else f"the {engine.name} jobs get"
        print(f"warning: PACK > 1, but {where} no GPU: on CPU only packs that fold pay; a vmapped pack (prefix "
              "tuning, DeBERTa, LoRA: its note says so) can be slower than its runs one after another "
              "(README 'Speed')", file=sys.stderr)


def launch(jobs_file: str, engine: Engine) -> int:
    """Run the jobs of a job list that the results log does not hold yet on an engine (src/engines.py);
    0 when all succeeded."""
    state = state_folder(jobs_file)
    if state.exists() and not state.is_dir():
        raise UserError(f"{state} is not a folder: the job list's state folder goes there (move that file away)")
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
    if startable:
        engine.start()  # it may still refuse the jobs (a Ray cluster too small for them): before any starts
    interrupted = True  # until the engine has run every job (Ctrl-C: KeyboardInterrupt, tools/launch.py)
    try:
        try:
            state.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot make the job list's state folder {state}: {error}") from None
        for job in pending:
            for suffix in (".err", ".out", ".exit"):
                (state / f"{job.key}{suffix}").unlink(missing_ok=True)
        progress = Progress(pending, state, engine.name)
        blocked = [job for job in pending if job.setup_error]
        for job in blocked[:1] if not startable else blocked:  # failed without starting
            (state / f"{job.key}.err").write_text(job.setup_error + "\n")
            write_file(state / f"{job.key}.exit", f"{job.setup_exit} {time.time():.3f} {time.time():.3f}\n")
            progress.report(job, job.setup_exit, job.setup_error)
        if not startable:
            print("error: stopping the sweep: no remaining run can start (see above); fix that and rerun to resume",
                  file=sys.stderr)
            return progress.summary()
        pack_warning(startable, engine)
        for job, code, error in engine.run(startable, state):
            progress.report(job, code, error)
        interrupted = False
    finally:
        if startable:
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
        if finished and finished[0] == 0:  # it ran, but the log no longer holds all of its runs
            rows["pending"].append(f"pending (exit 0 when it ran; the log lacks some of its runs now): {job.label}")
        elif finished:
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
