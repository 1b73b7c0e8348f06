"""Run a sweep's job list on an engine (local, ray, slurm), or show how far it got.

    TASK=SST-2 PRINT_JOBS=1 bash run_one_task.sh > jobs.txt       # the job list (or ENGINE=... in the sweep)
    python tools/launch.py --engine ray jobs.txt                  # run the jobs the log does not hold yet
    python tools/launch.py --status jobs.txt                      # done / failed (with the error) / pending

A job is done when the results log holds its runs, so rerunning the same command resumes. Each job's
stderr is kept in jobs.txt.state/. PACK > 1 packs are for GPUs: on CPU they are slower than the same
runs one after another (0.79-0.89x measured), and the launcher warns. How the engines run a job:
src/launch.py and src/engines.py; set-up on a cluster: README, "On a cluster".
"""
import argparse
import os
import re
import sys

from src.checks import ArgumentParser, at_least, one_of, typed
from src.engines import ENGINES
from src.errors import cli
from src.launch import launch, pending_lines, status


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


@cli
def main(argv=None):
    env = os.environ.get
    parser = ArgumentParser(description=__doc__.split("\n")[0], epilog=(
        "PACK > 1 is for GPUs: on CPU a pack is slower than its runs one after another (0.79-0.89x measured); "
        "the launcher warns when the jobs get no GPU. README: 'On a cluster'."))
    parser.add_argument("jobs_file", metavar="JOBS_FILE", help="a job list (PRINT_JOBS=1 of the sweeps); "
                        "`-` reads it from standard input (with --pending)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="print what is done, failed (with its error line), "
                      "started and pending; exit 0 when every job is done")
    mode.add_argument("--pending", action="store_true", help="print the job lines the log does not hold yet")
    parser.add_argument("--engine", default=env("ENGINE", "local"), type=typed(str, one_of(*ENGINES)),
                        help="where the jobs run (ENGINE; default local: one after another on this machine)")
    parser.add_argument("--runs-per-gpu", default=env("RUNS_PER_GPU", "1"), type=typed(int, at_least(1)),
                        help="jobs sharing one GPU (RUNS_PER_GPU): ray num_gpus=1/R; slurm: R jobs per "
                             "array task and its GPU")
    parser.add_argument("--cpus-per-job", default=env("CPUS_PER_JOB"), type=typed(int, at_least(1)),
                        help="CPUs per job (CPUS_PER_JOB; default: ray 1, slurm the cluster's default)")
    ray = parser.add_argument_group("ray")
    ray.add_argument("--address", default=env("RAY_ADDRESS"),
                     help="the Ray cluster to join (RAY_ADDRESS): HOST:PORT of its head or auto; "
                          "default: start a Ray instance on this machine")
    ray.add_argument("--retries", default="3", type=typed(int, at_least(0)),
                     help="times a job is run again when its worker or node dies (3)")
    slurm = parser.add_argument_group("slurm (sbatch options; their SBATCH_* variables are read too)")
    slurm.add_argument("--partition", default=env("SBATCH_PARTITION"))
    slurm.add_argument("--gres", default=env("SBATCH_GRES"), help="e.g. gpu:1 (one GPU per array task)")
    slurm.add_argument("--account", default=env("SBATCH_ACCOUNT"))
    slurm.add_argument("--time", default=env("SBATCH_TIMELIMIT"), type=slurm_minutes,
                       help="time limit per array task (required); a task that reaches it is requeued and "
                            "resumes its job")
    slurm.add_argument("--array-parallelism", default="256", type=typed(int, at_least(1)),
                       help="array tasks running at once (256)")
    args = parser.parse_args(argv)
    try:
        if args.status:
            return status(args.jobs_file)
        if args.pending:
            for line in pending_lines(args.jobs_file):
                print(line)
            return 0
        return launch(args.jobs_file, ENGINES[args.engine](args))
    except KeyboardInterrupt:  # the running jobs stopped with it; rerunning resumes
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
