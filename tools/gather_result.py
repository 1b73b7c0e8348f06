"""Summarise the runs of a results log that match a condition: mean ± std of the test metric over seeds.

Two ways to pick which run stands for a seed (SPEC §6):
  lm-bff     per seed, the run with the best dev score (any setting); report its test score.
  reference  the paper's scripts: per setting (e.g. learning rate), the mean test score over seeds;
             the setting with the best mean *test* score wins; report its per-seed test scores.

Usage: python tools/gather_result.py --condition "{'task_name': 'sst-2', 'tag': 'exp'}" [--key acc]
"""
import ast
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.checks import ArgumentParser  # noqa: E402
from src.errors import UserError, cli  # noqa: E402
from src.results import matches, read_results  # noqa: E402
from src.tasks import get_task  # noqa: E402

PROTOCOLS = ("lm-bff", "reference")
ALWAYS_SETTING = ("learning_rate", "per_device_train_batch_size")
# Keys that describe a run rather than its hyper-parameters; they never define a setting.
# (Keys ending in "_dir", holding "_eval_" (metrics) or holding lists/dicts are excluded as well.)
RUN_KEYS = {"seed", "time", "wall_time", "stages", "trainable_params", "total_params",
            "trainable_percent", "run_name", "do_train"}


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


def _is_hyper_parameter(key, value):
    return not (key in RUN_KEYS or key.endswith("_dir") or "_eval_" in key
                or isinstance(value, (list, dict)))


def setting_keys(records):
    """learning rate, batch size, and every other hyper-parameter whose value varies among `records`."""
    keys = {k for r in records for k, v in r.items() if _is_hyper_parameter(k, v)} - set(ALWAYS_SETTING)
    varying = sorted(k for k in keys if len({repr(r.get(k)) for r in records}) > 1)
    return ALWAYS_SETTING + tuple(varying)


def _setting(record, keys):
    """The hyper-parameters that tell this run apart; a zero-shot run has only one setting."""
    if record.get("do_train", True) is False:
        return (("do_train", False),)
    return tuple((key, record.get(key)) for key in keys)


def _metric(record, name):
    if name not in record:
        raise UserError(f"a matching record (seed {record.get('seed')}) has no metric {name!r}")
    return record[name]


def _rank(score):
    """Sort key for a score: NaN (e.g. Pearson of a constant prediction) ranks lowest."""
    return -math.inf if math.isnan(score) else score


def _best_per_seed(records, dev_name):
    """seed → the record with the best dev score (the first one on ties)."""
    best = {}
    for record in records:
        seed = record.get("seed")
        if seed not in best or _rank(_metric(record, dev_name)) > _rank(_metric(best[seed], dev_name)):
            best[seed] = record
    return dict(sorted(best.items()))


def gather(records, condition, key=None, protocol="lm-bff", test_task=None):
    """Summarise the records matching `condition`; None when none matches.

    Returns dict(mean, std, n, per_seed=[dict(seed, dev, test, setting)], setting, protocol,
    dev_metric, test_metric); mean/std are fractions (std: population, ddof=0). `setting` is the
    chosen setting (reference protocol) or None (lm-bff: each seed may pick another setting).
    `test_task` reports another test set of the same task (MNLI: 'mnli-mm').
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    selected = [r for r in records if matches(r, condition)]
    if not selected:
        return None
    tasks = sorted({str(r.get("task_name")) for r in selected})
    if len(tasks) > 1:
        raise UserError(f"the condition matches records of several tasks ({', '.join(tasks)}); "
                        "add 'task_name' to it")
    task = get_task(tasks[0])
    if test_task is not None and get_task(test_task) is not task:
        raise UserError(f"--test_task {test_task} is not a test set of task {tasks[0]}")
    key = key or task.main_metric
    dev_name = f"{tasks[0]}_dev_eval_{key}"
    test_name = f"{(test_task or tasks[0]).lower()}_test_eval_{key}"

    keys = setting_keys(selected)
    if protocol == "lm-bff":
        chosen, setting = _best_per_seed(selected, dev_name), None
    else:
        by_setting = {}
        for record in selected:
            by_setting.setdefault(_setting(record, keys), []).append(record)
        per_setting = {s: _best_per_seed(rs, dev_name) for s, rs in by_setting.items()}
        best = max(per_setting, key=lambda s: _rank(np.mean([_metric(r, test_name)
                                                             for r in per_setting[s].values()])))
        chosen, setting = per_setting[best], dict(best)

    per_seed = [dict(seed=seed, dev=_metric(r, dev_name), test=_metric(r, test_name),
                     setting=dict(_setting(r, keys))) for seed, r in chosen.items()]
    tests = [row["test"] for row in per_seed]
    return dict(mean=float(np.mean(tests)), std=float(np.std(tests)), n=len(tests), per_seed=per_seed,
                setting=setting, protocol=protocol, dev_metric=dev_name, test_metric=test_name)


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
    parser.add_argument("--condition", required=True, help="Python dict literal, e.g. \"{'task_name': 'sst-2'}\"")
    parser.add_argument("--key", help="metric name (acc, f1, mcc, pearson); default: the task's main metric")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="lm-bff")
    parser.add_argument("--test_task", help="report this test set instead (MNLI: mnli-mm)")
    args = parser.parse_args(argv)
    condition = parse_condition(args.condition)
    result = gather(read_results(args.log_file), condition, args.key, args.protocol, args.test_task)
    if result is None:
        print(f"no record in {args.log_file} matches {condition}", file=sys.stderr)
        return 1
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
