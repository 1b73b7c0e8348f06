"""Per-step time of training, end to end through run.py (figures: docs/PERFORMANCE.md, "Step time").

    python tools/step_benchmark.py --data_dir ../shared/data/k-shot/SST-2/16-42 \
        --setting "compiled=--torch_compile --pad_to_multiple_of 16" --setting "pack20=--seed $(seq -s ' ' 1 20)"

Each setting is run.py with extra arguments, on the deep-narrow stand-in (roberta-large's 24 layers
at width 16, one attention head, FFN 64: `src/random_models.create`, real RoBERTa vocabulary), SST-2
16-shot, `prompt,bias,adapter`, batch 4, one torch thread (OMP_NUM_THREADS=1), dropout as the model's.
Per-step time = (wall at S2 steps - wall at S1 steps) / (S2 - S1), so start-up, compilation and the
final evaluation cancel; the wall of a run is its record's `wall_time` (run.py's own time from the
run's start to its record: the interpreter's start and imports, which vary most under load, left
out; a pack's: its last record's). Every setting first runs once at S1 (warm-up: feature and compile
caches), then each (setting, step count) twice, round-robin, and the smaller wall counts. A pack
(`--seed` with K values) gives per-run-step time = per-step time / K.

The baseline `eager` (no extra arguments: today's single run) is always measured in the same
invocation; each setting's ratio is B / its per-run-step time. Output: `metric<TAB>value` lines.
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

BASELINE = "eager"
MODEL = dict(hidden_size=16, num_hidden_layers=24, num_attention_heads=1, intermediate_size=64)
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
    parser.add_argument("--steps", type=typed(int, at_least(1)), nargs=2, default=[10, 60], metavar=("S1", "S2"),
                        help="the two step counts (S1 < S2)")
    parser.add_argument("--repeats", type=typed(int, at_least(1)), default=2,
                        help="walls per (setting, step count); the smallest counts")
    parser.add_argument("--work_dir", default=None, help="model, feature cache and runs (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.steps[0] >= args.steps[1]:
        parser.error(f"--steps: S1 must be below S2, got {args.steps[0]} {args.steps[1]}")
    if not (Path(args.data_dir) / "train.tsv").is_file():
        raise UserError(f"--data_dir: no train.tsv in {args.data_dir}")
    return args


def runs_of(extra):
    """How many runs the extra arguments make: the values after --seed (K for a pack), else 1."""
    if "--seed" not in extra:
        return 1
    values = extra[extra.index("--seed") + 1:]
    return next((i for i, value in enumerate(values) if value.startswith("--")), len(values))


def wall(work, data_dir, extra, steps, tag):
    """run.py's wall for `steps` steps of the setting: the largest `wall_time` among its records."""
    folder = Path(tempfile.mkdtemp(prefix=f"{tag}-{steps}-", dir=work))
    argv = [sys.executable, str(ROOT / "run.py"), *RUN_ARGS, "--model_name_or_path", str(work / "model"),
            "--data_dir", str(data_dir), "--max_steps", str(steps), "--feature_cache_dir", str(work / "cache"),
            "--output_dir", str(folder / "out" / "{seed}"), "--log_file", str(folder / "log"), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"setting {tag!r} at {steps} steps: run.py exited {done.returncode}: "
                        f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return max(json.loads(line)["wall_time"] for line in (folder / "log").read_text().splitlines())


def measure(args, work):
    """{name: per-run-step seconds} of the baseline and every setting."""
    from src.random_models import create
    create("roberta", work / "model", **MODEL)
    settings = [(BASELINE, []), *args.setting]
    walls = {(name, steps): [] for name, _ in settings for steps in args.steps}
    for name, extra in settings:  # warm-up: features and compile caches
        wall(work, args.data_dir, extra, args.steps[0], name)
    for repeat in range(args.repeats):
        for name, extra in settings[repeat % len(settings):] + settings[:repeat % len(settings)]:
            for steps in args.steps:
                walls[name, steps].append(wall(work, args.data_dir, extra, steps, name))
    low, high = args.steps
    per_step = {}
    for name, extra in settings:
        per_step[name] = (min(walls[name, high]) - min(walls[name, low])) / (high - low) / runs_of(extra)
        for steps in args.steps:
            yield f"wall_s_{name}_{steps}_steps", " ".join(f"{w:.2f}" for w in walls[name, steps])
        yield f"runs_{name}", runs_of(extra)
    for name, seconds in per_step.items():
        yield f"per_run_step_ms_{name}", f"{1000 * seconds:.2f}"
    for name in per_step:
        if name != BASELINE:
            yield f"speedup_{name}_vs_{BASELINE}", f"{per_step[BASELINE] / per_step[name]:.3f}"


@cli
def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    print(f"model\troberta {' '.join(f'{k}={v}' for k, v in MODEL.items())}")
    print(f"steps\t{args.steps[0]} {args.steps[1]}")
    for name, extra in args.setting:
        print(f"setting_{name}\t{' '.join(extra)}")
    with tempfile.TemporaryDirectory(prefix="step-benchmark-") as scratch:
        work = Path(args.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        for metric, value in measure(args, work):
            print(f"{metric}\t{value}", flush=True)
    print(f"benchmark_wall_s\t{time.time() - started:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
