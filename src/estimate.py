"""How long a job list's pending runs train at measured rates (tools/launch.py --estimate FIGURES).

FIGURES is what tools/step_benchmark.py prints (or tools/gpu_check.sh's gpu_check.tsv on a GPU):
`metric<TAB>value` lines, per setting `runs_NAME` (runs a process trains together: a pack's K),
`run_steps_per_s_NAME` and `process_overhead_s_NAME` (a process's seconds beyond its steps: start-up,
compilation, the benchmark's final evaluation). The estimate counts the optimizer steps each pending run
trains (the Trainer's count, every stage; none for a run of a pending pack that the log holds: --skip_done
drops it): hours on one device that runs the pending jobs one after another as that setting ran =
(steps / rate + jobs x overhead) / 3600. Evaluations during training are not counted, the final one only
as the benchmark's (32 dev examples), and a rate holds only for jobs run as it was measured (model, run.py
flags, pack size).
"""
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from src.errors import UserError
from src.launch import logged_runs, read_jobs, run_unit

RATE = "run_steps_per_s_"
RUNS = "runs_"
OVERHEAD = "process_overhead_s_"
ABOUT = ("gpu", "model", "run_args")  # lines that say what was measured


@dataclass
class Rate:
    setting: str
    runs: int  # runs per process: a pack's K
    run_steps_per_s: float
    overhead_s: float  # a process's seconds beyond its steps (0 where the figures lack it)


def read_rates(path: str) -> Tuple[List[Rate], Dict[str, str]]:
    """The settings' rates in a step benchmark's output, and what it measured (ABOUT lines)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--estimate: cannot read {path}: {error}") from None
    values = {}
    for line in text.splitlines():
        metric, tab, value = line.partition("\t")
        if tab:
            values[metric] = value.strip()
    rates = []
    for metric, value in values.items():
        if not metric.startswith(RATE):
            continue
        setting = metric[len(RATE):]
        try:
            rate, runs = float(value), int(values.get(RUNS + setting, "1"))
            overhead = float(values.get(OVERHEAD + setting, "0"))
        except ValueError:
            raise UserError(f"--estimate: {path}: {setting}: not a number: {value!r}, "
                            f"{values.get(RUNS + setting)!r} or {values.get(OVERHEAD + setting)!r}") from None
        if not (rate > 0 and math.isfinite(rate)) or runs < 1 or not math.isfinite(overhead):
            raise UserError(f"--estimate: {path}: {setting}: {rate} run-steps/s, {runs} runs and {overhead} s "
                            "a process: not a rate")
        rates.append(Rate(setting, runs, rate, max(overhead, 0.0)))
    if not rates:
        raise UserError(f"--estimate: {path} holds no `{RATE}NAME<TAB>value` line: it is not what "
                        "tools/step_benchmark.py or tools/gpu_check.sh print")
    return rates, {name: values[name] for name in ABOUT if values.get(name)}


def training_steps(run: Sequence[str], folder: str) -> int:
    """The optimizer steps one run trains, all stages together (0: no training). As the Trainer counts
    them: --max_steps when positive, else epochs x batches per epoch / accumulation (reading the
    training split, whose folder is relative to `folder`)."""
    from src.arguments import parse_args
    from src.experiment import Experiment
    from src.tasks import read_examples

    experiment = Experiment(*parse_args(run))
    if not experiment.trains:
        return 0
    args = experiment.args
    if args.max_steps > 0:
        per_stage = args.max_steps
    else:
        examples = len(read_examples(experiment.task, os.path.join(folder, experiment.data_args.data_dir), "train"))
        batches = math.ceil(examples / args.per_device_train_batch_size)
        per_stage = math.ceil(args.num_train_epochs * max(batches // args.gradient_accumulation_steps, 1))
    return len(experiment.stages) * per_stage


def report(jobs_file: str, figures: str) -> int:
    """Print the pending jobs' run-steps and the hours they take at each measured setting's rate."""
    rates, about = read_rates(figures)  # before the job list's lines run anything
    jobs, done = read_jobs(jobs_file)
    pending = [job for job in jobs if job.key not in done]
    blocked = [job for job in pending if job.setup_error]
    if blocked:
        raise UserError(f"--estimate: {blocked[0].label}: {blocked[0].setup_error.removeprefix('error: ')}")
    logged = logged_runs(pending)  # a pending pack's runs that the log holds: --skip_done drops them
    steps = [training_steps(run, job.folder) for job in pending
             for run, done in zip(job.runs, logged[job.key]) if not done]
    total = sum(steps)
    skipped = sum(map(sum, logged.values()))
    print(f"{jobs_file}: {len(jobs)} {run_unit(jobs)}, {len(pending)} not in the log yet (a process each): "
          f"{sum(1 for s in steps if s)} runs that train, {total} run-steps"
          + (f" ({skipped} of their runs in the log already: skipped)" if skipped else ""))
    print(f"hours on one device, at the rates of {figures} "
          f"({'; '.join(f'{name} {value}' for name, value in about.items()) or 'no description'}); "
          "evaluations during training not counted:")
    print(f"{'setting':<16}{'runs':>6}{'run-steps/s':>14}{'s/process':>12}{'hours':>10}")
    packs = {len(job.runs) for job in pending if job.runs}  # runs per process of these jobs
    other = [rate for rate in rates if packs and packs != {rate.runs}]
    for rate in rates:
        hours = (total / rate.run_steps_per_s + len(pending) * rate.overhead_s) / 3600
        print(f"{rate.setting:<16}{rate.runs:>6}{rate.run_steps_per_s:>14.2f}{rate.overhead_s:>12.1f}{hours:>10.2f}"
              + ("  *" if rate in other else ""))
    if other:
        print(f"* measured with another number of runs per process than these jobs' "
              f"({', '.join(map(str, sorted(packs)))}): run as it was, they would be other jobs (PACK)")
    return 0
