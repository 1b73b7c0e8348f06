"""A results log made of the paper's own Table 2 (data/reference/paper_table2.csv), as run.py writes
records: per cell three seeds at mean - std·√1.5, mean, mean + std·√1.5 (population mean and std =
the paper's), each with a second learning rate that has a worse dev score and a test score `decoy`
points away; zero-shot (`none`) is one run, as in the sweeps. Full-data records carry --dev_as_test."""
import json
import math

from src.comparison import AVERAGE, load_paper
from src.summary import FULL_DATA
from src.tasks import get_task

SEEDS = (13, 42, 100)
SPREAD = (-math.sqrt(1.5), 0.0, math.sqrt(1.5))
TAG = "paper"


def paper_records(settings=("16-shot", FULL_DATA), shift=None, drop=(), decoy=-5.0):
    """Records for every task cell of the paper's blocks in `settings`; `shift` maps a cell
    (setting, hard, task, combination) to points added to its seeds; cells in `drop` get no run."""
    shift = shift or {}
    records = []
    for cell, paper in load_paper().items():
        setting, hard, task_name, combination = cell
        if task_name == AVERAGE or setting not in settings or cell in drop:
            continue
        task = get_task(task_name)
        metric = task.main_metric
        zero_shot = combination == "none"
        params = "all" if zero_shot else combination
        for seed, spread in zip(SEEDS[:1] if zero_shot else SEEDS, SPREAD[1:2] if zero_shot else SPREAD):
            test = (paper.mean + shift.get(cell, 0.0) + spread * (paper.std or 0.0)) / 100
            run = {"task_name": task.key, "tag": TAG, "seed": seed, "do_train": not zero_shot,
                   "training_params": params, "template": task.template(hard, "prompt" in params.split(",")),
                   "dev_as_test": setting == FULL_DATA, "num_k": 16, "per_device_train_batch_size": 4,
                   "trainable_percent": 0.0 if zero_shot else 1.0}
            records.append({**run, "learning_rate": 1e-3, f"{task.key}_dev_eval_{metric}": 0.9,
                            f"{task.key}_test_eval_{metric}": test})
            if not zero_shot:
                records.append({**run, "learning_rate": 1e-4, f"{task.key}_dev_eval_{metric}": 0.1,
                                f"{task.key}_test_eval_{metric}": test + decoy / 100})
    return records


def write_log(path, records):
    """The records as a results log (JSON lines), in one write."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)
