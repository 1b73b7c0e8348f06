"""Per-step time of training, end to end through run.py (figures: docs/PERFORMANCE.md, "Step time").

    python tools/step_benchmark.py --data_dir ../shared/data/k-shot/SST-2/16-42 \
        --setting "compiled=--torch_compile --pad_to_multiple_of 16" --setting "pack20=--seed $(seq -s ' ' 1 20)"

Each setting is run.py with extra arguments, on the deep-narrow stand-in (roberta-large's 24 layers
at width 16, one attention head, FFN 64: `src/random_models.create`, real RoBERTa vocabulary) or another
of the benchmarks' sizes (`src/random_models.MODEL_SIZES`; `--model_size small`: hidden 256, 4 layers,
bound by its matrix products), SST-2 16-shot, `prompt,bias,adapter`, batch 4, one torch thread
(OMP_NUM_THREADS=1), dropout as the model's.
Per-step time = (time at the end of step S2 - time at the end of step S1) / (S2 - S1) inside one run.py
process (a clock on the Trainer's step-end callbacks; S1 = 20, S2 = --steps), so start-up, compilation
(which under load varies by more than a hundred steps take: walls of whole processes do not cancel it)
and the final evaluation stay out; no evaluation in between. Each setting runs --repeats times, the
settings round-robin, and the fastest counts. A pack (`--seed` with K values) gives per-run-step time =
per-step time / K (its first run's clock: the pack steps all runs together).

The baseline `eager` (no extra arguments: today's single run, the lean step) is always measured in the same
invocation; each setting's ratio is B / its per-run-step time. The Trainer's own step, as runs took it before
the lean step was every run's: --setting "trainer_step=--torch_empty_cache_steps 1000000". `--run_args` go to
every setting, the baseline included (e.g. `--bf16`). Also per setting: run-steps per second (all its runs
together), peak memory per run (the process's peak / K: on CUDA its tensors', on CPU its resident set, the
libraries included) and the seconds a process takes beyond its steps (its wall minus --steps at its rate:
start-up, compilation, the final evaluation; the smallest of --repeats). A setting whose run fails gets
`failed_NAME` (its error line) and the others go on; the exit status is then 1. Output: `metric<TAB>value`
lines, which tools/launch.py --estimate reads. On a GPU: tools/gpu_check.sh.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.checks import ArgumentParser, at_least, typed  # noqa: E402
from src.errors import UserError, cli  # noqa: E402
from src.estimate import OVERHEAD, RATE, RUNS  # noqa: E402 (the names --estimate reads)
from src.random_models import MODEL_SIZES, create  # noqa: E402

BASELINE = "eager"
SKIPPED = 20  # steps before the clock starts: compilation, and recompilation for a second batch shape
RUN_ARGS = ["--task_name", "SST-2", "--template", "*cls*prompt*sent_0*_It_was*mask*.*sep+*",
            "--mapping", "{'0':'terrible','1':'great'}", "--training_params", "prompt,bias,adapter", "--do_train",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32", "--learning_rate", "1e-3",
            "--seed", "42", "--eval_strategy", "steps", "--eval_steps", "1000000", "--dev_as_test",
            "--skip_train_eval", "--disable_tqdm", "true"]


def setting(text):
    """NAME=ARGS: a name for the output and run.py's extra arguments (split at spaces)."""
    name, sep, extra = text.partition("=")
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum() or name == BASELINE:
        raise argparse.ArgumentTypeError(f"expected NAME=ARGS with a name of letters, digits, - or _ (not "
                                         f"{BASELINE!r}, the baseline), got {text!r}")
    return name, extra.split()


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="SST-2 k-shot folder (train.tsv, dev.tsv)")
    parser.add_argument("--setting", type=setting, action="append", default=[],
                        help="NAME=ARGS: a setting beside the baseline (repeatable)")
    parser.add_argument("--model_size", default="deep-narrow", choices=sorted(MODEL_SIZES),
                        help="the random RoBERTa's shape (src/random_models.MODEL_SIZES)")
    parser.add_argument("--run_args", default="", help="run.py arguments for every setting, the baseline "
                        "included (split at spaces), e.g. \"--bf16 --max_seq_length 128\"")
    parser.add_argument("--steps", type=typed(int, at_least(SKIPPED + 10)), default=120,
                        help=f"steps per run; timed: those after step {SKIPPED}")
    parser.add_argument("--repeats", type=typed(int, at_least(1)), default=2,
                        help="runs per setting; the fastest counts")
    parser.add_argument("--work_dir", default=None, help="model, feature cache and runs (default: a temporary one)")
    args = parser.parse_args(argv)
    args.data_dir = str(Path(args.data_dir).resolve())  # run.py runs in the work folder
    if not (Path(args.data_dir) / "train.tsv").is_file():
        raise UserError(f"--data_dir: no train.tsv in {args.data_dir}")
    return args


def runs_of(extra):
    """How many runs the extra arguments make: the values after --seed (K for a pack), else 1."""
    if "--seed" not in extra:
        return 1
    values = extra[extra.index("--seed") + 1:]
    return next((i for i, value in enumerate(values) if value.startswith("--")), len(values))


def step_times(argv):
    """run.py's main(argv) with a clock on the first Trainer that trains: the time at the end of each of
    its steps and the process's peak memory (CUDA: allocated tensors; CPU: resident set), written to
    step_times.json (in a child process: `per_step`)."""
    import resource

    import torch
    from run import main
    from src.trainer import DeltaTrainer
    from transformers import TrainerCallback
    times, train = [], DeltaTrainer.train

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    def clocked(self, *args, **kwargs):
        if not times:
            self.add_callback(Clock())
        return train(self, *args, **kwargs)
    DeltaTrainer.train = clocked
    status = main(argv)
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    Path("step_times.json").write_text(json.dumps({"times": times, "peak_memory_bytes": peak}))
    return status


def per_step(work, model, data_dir, extra, steps, tag):
    """Seconds per step of the setting, from one run.py process of `steps` steps: (time at the end of
    step S2 - time at the end of step S1) / (S2 - S1), S2 = `steps`, S1 = SKIPPED; its peak memory; and
    the process's seconds beyond its steps at that rate (start-up, compilation, the final evaluation)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=work))
    argv = [*RUN_ARGS, "--model_name_or_path", str(model), "--data_dir", str(data_dir),
            "--max_steps", str(steps), "--feature_cache_dir", str(work / "cache"),
            "--output_dir", str(folder / "out" / "{seed}"), "--log_file", str(folder / "log"), *extra]
    child = "import sys; from tools.step_benchmark import step_times; sys.exit(step_times(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", child, *argv], cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise UserError(f"setting {tag!r}: run.py exited {done.returncode}: "
                        f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    clock = json.loads((folder / "step_times.json").read_text())
    times = clock["times"]
    step = (times[steps - 1] - times[SKIPPED - 1]) / (steps - SKIPPED)
    return step, clock["peak_memory_bytes"], wall - steps * step


def measure(args, work, failed):
    """metric, value: each setting's seconds per run-step (the smallest of --repeats), and B's ratios. A
    setting whose run fails is left out from then on (`failed`: name -> its error), the others go on."""
    model = create("roberta", work / f"model-{args.model_size}", **MODEL_SIZES[args.model_size])
    settings = [(BASELINE, []), *args.setting]
    seconds, peaks, overheads = ({name: [] for name, _ in settings} for _ in range(3))
    for repeat in range(args.repeats):  # round-robin, a rotating order
        for name, extra in settings[repeat % len(settings):] + settings[:repeat % len(settings)]:
            if name in failed:
                continue
            try:
                step, peak, overhead = per_step(work, model, args.data_dir, [*args.run_args.split(), *extra],
                                                args.steps, name)
            except UserError as error:
                failed[name] = str(error)
                continue
            seconds[name].append(step / runs_of(extra))
            peaks[name].append(peak / runs_of(extra))
            overheads[name].append(overhead)
    measured = [(name, extra) for name, extra in settings if name not in failed]
    for name, extra in settings:
        yield f"{RUNS}{name}", runs_of(extra)
        if name in failed:
            yield f"failed_{name}", failed[name]
        else:
            yield f"per_run_step_ms_{name}_each", " ".join(f"{1000 * s:.2f}" for s in seconds[name])
    for name, _ in measured:
        yield f"per_run_step_ms_{name}", f"{1000 * min(seconds[name]):.2f}"
        yield f"{RATE}{name}", f"{1 / min(seconds[name]):.2f}"
        yield f"peak_memory_mb_per_run_{name}", f"{max(peaks[name]) / 2 ** 20:.1f}"
        yield f"{OVERHEAD}{name}", f"{min(overheads[name]):.1f}"
    if BASELINE not in failed:
        for name, _ in measured[1:]:
            yield f"speedup_{name}_vs_{BASELINE}", f"{min(seconds[BASELINE]) / min(seconds[name]):.3f}"


@cli
def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    print(f"model\troberta {args.model_size}: {' '.join(f'{k}={v}' for k, v in MODEL_SIZES[args.model_size].items())}")
    print(f"steps\t{args.steps} (timed: {SKIPPED + 1} to {args.steps})")
    print(f"run_args\t{args.run_args}")
    for name, extra in args.setting:
        print(f"setting_{name}\t{' '.join(extra)}")
    failed = {}
    with tempfile.TemporaryDirectory(prefix="step-benchmark-") as scratch:
        work = Path(args.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        for metric, value in measure(args, work, failed):
            print(f"{metric}\t{value}", flush=True)
    print(f"benchmark_wall_s\t{time.time() - started:.1f}")
    for error in failed.values():
        print(f"error: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
