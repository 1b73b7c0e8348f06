"""Summarise the runs of a results log that match a condition: mean ± std of the test metric over seeds.

How a seed's run is chosen (protocols lm-bff and reference): src/summary.py.

Usage: python tools/gather_result.py --condition "{'task_name': 'sst-2', 'tag': 'exp'}" [--key acc]
"""
import ast
import sys

from src.checks import ArgumentParser
from src.errors import UserError, cli
from src.results import read_results
from src.summary import PROTOCOLS, gather


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


def format_report(result):
    if result["protocol"] == "lm-bff":
        how = f"per seed, the run with the best {result['dev_metric']}"
    else:
        how = f"the setting with the best mean {result['test_metric']} over seeds ({_describe(result['setting'])})"
    lines = [f"protocol {result['protocol']}: {how}"]
    lines += [f"seed {row['seed']}: {result['test_metric']} {row['test'] * 100:.2f} "
              f"(dev {row['dev'] * 100:.2f}; {_describe(row['setting'])})" for row in result["per_seed"]]
    lines.append(f"{result['test_metric']}: {result['mean'] * 100:.2f} ± {result['std'] * 100:.2f} "
                 f"(n={result['n']} seeds, protocol {result['protocol']})")
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
    args = parser.parse_args(argv)
    conditions = [parse_condition(text) for text in args.condition]
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
            print(format_report(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
