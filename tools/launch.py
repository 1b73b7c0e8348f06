"""Run a sweep's job list on an engine (local, ray, slurm), or show how far it got.

    TASK=SST-2 PRINT_JOBS=1 bash run_one_task.sh > jobs.txt       # the job list (or ENGINE=... in the sweep)
    python tools/launch.py --engine ray jobs.txt                  # run the jobs the log does not hold yet
    python tools/launch.py --status jobs.txt                      # done / failed (with the error) / pending
    python tools/launch.py --estimate gpu_check.tsv jobs.txt      # hours the pending runs take at measured rates

A job is done when the results log holds its runs, so rerunning the same command resumes. Each job's
stderr is kept in jobs.txt.state/. PACK > 1 packs are for GPUs: on CPU only packs that fold pay (a
vmapped one can be slower than its runs one after another), and the launcher warns. How the engines run a job:
src/launch.py, src/engines.py and src/jobs.py; set-up on a cluster: README, "On a cluster".
The engines' options come from their `Options` (src/engines.py): a new engine is one class and one entry.
"""
import argparse
import dataclasses
import os
import sys

from src.checks import ArgumentParser, one_of, typed
from src.engines import ENGINES, Engine
from src.errors import cli
from src.estimate import report
from src.launch import launch, pending_lines, status


def add_options(group, fields) -> None:
    """One flag per engine option: `--name-with-dashes`, its default from its environment variable."""
    for field in fields:
        env = field.metadata["env"]
        default = os.environ.get(env, field.default) if env else field.default
        group.add_argument("--" + field.name.replace("_", "-"), dest=field.name, default=default,
                           type=field.metadata["parse"], help=field.metadata["help"] + (f" ({env})" if env else ""))


def engine_options(args: argparse.Namespace):
    """The chosen engine's Options from the parsed flags."""
    options = ENGINES[args.engine].Options
    return options(**{field.name: getattr(args, field.name) for field in dataclasses.fields(options)})


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0], epilog=(
        "PACK > 1 is for GPUs: on CPU only packs that fold pay (a vmapped one can be slower than its runs one "
        "after another); the launcher warns when the jobs get no GPU. README: 'On a cluster'."))
    parser.add_argument("jobs_file", metavar="JOBS_FILE", help="a job list (PRINT_JOBS=1 of the sweeps); "
                        "`-` reads it from standard input (with --pending)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="print what is done, failed (with its error line), "
                      "started and pending; exit 0 when every job is done")
    mode.add_argument("--pending", action="store_true", help="print the job lines the log does not hold yet")
    mode.add_argument("--estimate", metavar="FIGURES", help="print the pending runs' training steps and the hours "
                      "they take on one device at each setting's rate and overhead per process in FIGURES (the "
                      "output of tools/step_benchmark.py or tools/gpu_check.sh; evaluations during training not "
                      "counted)")
    parser.add_argument("--engine", default=os.environ.get("ENGINE", "local"), type=typed(str, one_of(*ENGINES)),
                        help="where the jobs run (ENGINE; default local: one after another on this machine)")
    shared = dataclasses.fields(Engine.Options)
    add_options(parser, shared)
    for engine in ENGINES.values():
        own = [field for field in dataclasses.fields(engine.Options) if field.name not in {f.name for f in shared}]
        if own:
            add_options(parser.add_argument_group(engine.title or engine.name), own)
    args = parser.parse_args(argv)
    try:
        if args.status:
            return status(args.jobs_file)
        if args.estimate:
            return report(args.jobs_file, args.estimate)
        if args.pending:
            for line in pending_lines(args.jobs_file):
                print(line)
            return 0
        return launch(args.jobs_file, ENGINES[args.engine](engine_options(args)))
    except KeyboardInterrupt:  # the running jobs stopped with it; rerunning resumes
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
