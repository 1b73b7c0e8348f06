"""Summarise the runs of a results log that match a condition: mean ± std of the test metric over seeds.

How a seed's run is chosen (protocols lm-bff and reference): src/summary.py. Besides the chosen
runs, every setting (learning rate, ...) gets its mean ± std, its number of seeds and the seeds it
misses. The expected seeds are --seeds, by default every seed of the runs that match the condition
(so a setting that lacks a seed the others have is flagged; pass --seeds 13 21 42 87 100 to check
against the sweeps' seeds).

A task of your own is summarised from the task file its records keep; --task_file FILE keeps only the
records of that file's content (two files of one task name are two settings).

Usage: python tools/gather_result.py --condition "{'task_name': 'sst-2', 'tag': 'exp'}" [--key acc]
"""
import ast
import sys

from src.checks import ArgumentParser, at_least, typed
from src.errors import UserError, cli
from src.results import read_results
from src.summary import PROTOCOLS, gather
from src.tasks import load_task_file


def parse_condition(text):
    """A Python dict literal → dict (never eval); task_name is lower-cased as in the log."""
    try:
        condition = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise UserError(f"--condition is not a Python literal ({err.__class__.__name__}): {text}") from None
    if not isinstance(condition, dict):
        raise UserError(f"--condition must be a dict literal, got {type(condition).__name__}: {text}")
    if isinstance(condition.get("task_name"), str):
        condition["task_name"] = condition["task_name"].lower()
    return condition


def _describe(setting):
    return ", ".join(f"{k}={v}" for k, v in setting.items())


def _seeds(seeds, expected):
    missing = [seed for seed in expected if seed not in seeds]
    return f"{len(seeds)} seeds" + (f", missing {' '.join(map(str, missing))}" if missing else "")


def format_report(result, expected_seeds=None):
    """The chosen run per seed, every setting's summary, and the result; `expected_seeds` (default: every
    seed of the matching runs) are the seeds whose absence is reported."""
    seen = sorted({seed for s in result["settings"] for seed in s["seeds"]})
    expected = seen if expected_seeds is None else expected_seeds
    if result["protocol"] == "lm-bff":
        how = f"per seed, the run with the best {result['dev_metric']}"
    else:
        how = f"the setting with the best mean {result['test_metric']} over seeds ({_describe(result['setting'])})"
    lines = [f"protocol {result['protocol']}: {how}"]
    lines += [f"seed {row['seed']}: {result['test_metric']} {row['test'] * 100:.2f} "
              f"(dev {row['dev'] * 100:.2f}; {_describe(row['setting'])})" for row in result["per_seed"]]
    origin = "every seed of the matching runs" if expected_seeds is None else "--seeds"
    lines.append(f"settings (expected seeds {' '.join(map(str, expected))}: {origin}):")
    lines += [f"  {_describe(s['setting'])}: test {s['mean'] * 100:.2f} ± {s['std'] * 100:.2f}, "
              f"dev {s['dev'] * 100:.2f}; {_seeds(s['seeds'], expected)}" for s in result["settings"]]
    lines.append(f"{result['test_metric']}: {result['mean'] * 100:.2f} ± {result['std'] * 100:.2f} "
                 f"(n={_seeds(result['seeds'], expected)}, "
                 f"protocol {result['protocol']})")
    return "\n".join(lines)


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log_file", default="log")
    parser.add_argument("--condition", required=True, nargs="+",
                        help="Python dict literal, e.g. \"{'task_name': 'sst-2'}\"; several: one report each")
    parser.add_argument("--key", help="metric name (acc, f1, mcc, pearson); default: the task's main metric")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="lm-bff")
    parser.add_argument("--test_task", help="report this test set instead (MNLI: mnli-mm)")
    parser.add_argument("--task_file", help="only the runs of this task file (a task of your own)")
    parser.add_argument("--seeds", type=typed(int, at_least(0)), nargs="+",
                        help="the seeds every setting should have (default: every seed of the matching runs)")
    args = parser.parse_args(argv)
    conditions = [parse_condition(text) for text in args.condition]
    if args.task_file:
        definition = load_task_file(args.task_file).definition()
        conditions = [{**condition, "task_file": definition} for condition in conditions]
    records = read_results(args.log_file)
    status = 0
    for text, condition in zip(args.condition, conditions):
        if len(conditions) > 1:
            print(f"\n## {text}")
        result = gather(records, condition, args.key, args.protocol, args.test_task)
        if result is None:
            print(f"no record in {args.log_file} matches {condition}", file=sys.stderr)
            status = 1
        else:
            print(format_report(result, args.seeds))
    return status


if __name__ == "__main__":
    sys.exit(main())
