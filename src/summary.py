"""Summaries of a results log: per seed, which run stands for it, and mean ± std over seeds (SPEC §6).

Two ways to pick which run stands for a seed:
  lm-bff     per seed, the run with the best dev score (any setting); report its test score.
  reference  the paper's scripts: per setting (e.g. learning rate), the mean test score over seeds;
             the setting with the best mean *test* score wins; report its per-seed test scores.
A setting is a run's identity without its seed and data split (`src.identity.setting_of`).

A run's data setting (`data_setting`) is `full` when it used --dev_as_test (full data: GLUE's test
labels are hidden, so the dev set is also the test set; the full-data sweeps always pass it), else
`K-shot` from its --num_k (the k-shot splits).
"""
import json
from typing import Iterable, List, Optional, Tuple

import numpy as np

from src.errors import UserError
from src.identity import setting_of
from src.results import matches, metric_key, with_run_facts
from src.tasks import recorded_task

PROTOCOLS = {"lm-bff": "per seed, the run with the best dev score",
             "reference": "the setting (learning rate, ...) with the best mean test score over seeds, "
                          "as the paper's scripts did"}
FULL_DATA = "full"
ALWAYS_SETTING = ("learning_rate", "per_device_train_batch_size")


def setting_keys(settings: List[dict]) -> Tuple[str, ...]:
    """learning rate, batch size, and every other argument whose value varies among `settings`
    (`setting_of` of each record: seeds, devices, times and output paths never count)."""
    keys = {key for setting in settings for key in setting} - set(ALWAYS_SETTING)
    varying = sorted(k for k in keys if len({repr(s.get(k)) for s in settings}) > 1)
    return ALWAYS_SETTING + tuple(varying)


def _setting(record, setting, keys):
    """The arguments that tell this run's setting apart; a zero-shot run has only one setting."""
    if record.get("zero_shot"):
        return (("zero_shot", True),)
    return tuple((key, repr(setting.get(key)) if isinstance(setting.get(key), (list, dict)) else setting.get(key))
                 for key in keys)


def data_setting(record: dict) -> str:
    """'full' (a --dev_as_test run) or 'K-shot' (K = the record's --num_k, 16 by default)."""
    return FULL_DATA if record.get("dev_as_test") else f"{record.get('num_k', 16)}-shot"


def _metric(record, name):
    if name not in record:
        raise UserError(f"a matching record (seed {record.get('seed')}) has no metric {name!r}")
    return record[name]


def _best_per_seed(records, dev_name):
    """seed → the record with the best dev score (the first one on ties)."""
    best = {}
    for record in records:
        seed = record.get("seed")
        if seed not in best or _metric(record, dev_name) > _metric(best[seed], dev_name):
            best[seed] = record
    return dict(sorted(best.items()))


def gather(records: Iterable[dict], condition: dict, key: Optional[str] = None, protocol: str = "lm-bff",
           test_task: Optional[str] = None) -> Optional[dict]:
    """Summarise the records matching `condition`; None when none matches.

    Returns dict(mean, std, n, seeds, dev, per_seed=[dict(seed, dev, test, setting)], setting,
    settings, protocol, dev_metric, test_metric): mean ± std (fractions; population std, ddof=0) of
    the chosen runs' test scores, their number, seeds and mean dev score. `setting` is the chosen
    setting (reference protocol) or None (lm-bff: each seed may pick another setting); `settings`
    lists every setting with the same summary (mean, std, n, seeds, dev) over each seed's best-dev
    run of that setting.
    `test_task` reports another test set of the same task (MNLI: 'mnli-mm').
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    selected = [with_run_facts(r) for r in records if matches(r, condition)]
    if not selected:
        return None
    tasks = sorted({str(r.get("task_name")) for r in selected})
    if len(tasks) > 1:
        raise UserError(f"the condition matches records of several tasks ({', '.join(tasks)}); "
                        "add 'task_name' to it")
    if len({json.dumps(r.get("task_file"), sort_keys=True) for r in selected}) > 1:
        raise UserError(f"the condition matches records of task {tasks[0]} from different task files (or a task file "
                        "and the built-in task); pick one: gather_result.py --task_file FILE")
    task = recorded_task(selected[0])
    if test_task is not None and test_task.lower() not in {task.key, *map(str.lower, task.other_tests.values())}:
        raise UserError(f"--test_task {test_task} is not a test set of task {tasks[0]}")
    key = key or task.main_metric
    dev_name = metric_key(tasks[0], "dev", key)
    test_name = metric_key((test_task or tasks[0]).lower(), "test", key)

    settings = {id(record): setting_of(record) for record in selected}
    keys = setting_keys(list(settings.values()))

    def setting(record):
        return _setting(record, settings[id(record)], keys)

    by_setting = {}
    for record in selected:
        by_setting.setdefault(setting(record), []).append(record)
    per_setting = {s: _best_per_seed(rs, dev_name) for s, rs in by_setting.items()}
    summaries = {s: _summary(runs, dev_name, test_name) for s, runs in per_setting.items()}
    if protocol == "lm-bff":
        chosen, best_setting = _best_per_seed(selected, dev_name), None
    else:
        best = max(summaries, key=lambda s: summaries[s]["mean"])
        chosen, best_setting = per_setting[best], dict(best)

    per_seed = [dict(seed=seed, dev=_metric(r, dev_name), test=_metric(r, test_name),
                     setting=dict(setting(r))) for seed, r in chosen.items()]
    return dict(**_summary(chosen, dev_name, test_name), per_seed=per_seed, setting=best_setting,
                settings=[dict(setting=dict(s), **summary) for s, summary in summaries.items()],
                protocol=protocol, dev_metric=dev_name, test_metric=test_name)


def _summary(runs, dev_name, test_name):
    """Over `runs` (seed → run): mean ± population std of the test scores, their number, the seeds,
    the mean dev score."""
    dev = float(np.mean([_metric(r, dev_name) for r in runs.values()]))
    tests = [_metric(r, test_name) for r in runs.values()]
    return dict(mean=float(np.mean(tests)), std=float(np.std(tests)), n=len(tests), seeds=list(runs), dev=dev)
