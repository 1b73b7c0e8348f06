"""The sequential-training figure: dev score vs. global step, one panel per stage order and
template kind (with manual template / soft-only, as in the paper's 12 panels).

Each multi-stage record (`training_params` with several space-separated stages) carries its
stages' eval histories; stage i is drawn after the end of stage i-1 (offset i × max_steps), coloured
by method (the delta registry's labels: PT = prompt, BF = BitFit, AP = adapter, ...). With several
records of one order (learning rates, seeds) and template kind, the one with the best final-stage dev
score is drawn.

Usage: python tools/plot_mulstage.py --log_file log --task SST-2 [--tag TAG] --output mulstage.png
       python tools/plot_mulstage.py --log_file log --task_file FILE [--tag TAG] --output mulstage.png
(a task of your own: the runs of that task file's content only)
(--output is written whole or not at all: under a temporary name, then moved into place.)
"""
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from src.checks import ArgumentParser  # noqa: E402
from src.delta import METHODS, combination_label  # noqa: E402
from src.errors import cli  # noqa: E402
from src.files import write_all  # noqa: E402
from src.results import read_results, with_run_facts  # noqa: E402
from src.tasks import get_task, load_task_file  # noqa: E402

# One colour per registry method, in registry order (matplotlib's default cycle).
COLOUR = {method.label: f"C{index}" for index, method in enumerate(METHODS.values())}
TEMPLATE_KIND = {"Y": "template", "N": "no template"}
PANELS_PER_ROW = 3


def stage_label(training_params):
    """'prompt' → 'PT'; a stage that trains several groups at once → 'PT+BF'."""
    return combination_label(training_params)


def select_runs(records, task, tag=None):
    """(order, 'Y'|'N') → the record with the best final-stage dev score; order is a multi-stage
    `training_params`, Y/N the template kind (manual / soft-only). A task of a task file: the runs of
    that file's content."""
    metric = task.main_metric
    definition = task.definition() if task.source else None
    best = {}
    for record in map(with_run_facts, records):
        order = record.get("combination") or ""
        if (record.get("task_name") != task.key or record.get("task_file") != definition
                or (tag is not None and record.get("tag") != tag)
                or len(order.split()) < 2 or not record.get("stages") or not record.get("hard")):
            continue
        key = (order, record["hard"])
        if key not in best or record["stages"][-1]["dev"][metric] > best[key]["stages"][-1]["dev"][metric]:
            best[key] = record
    return best


def plot_runs(runs, task, output, title):
    """Draw one panel per order of `runs` (from select_runs) into the PNG file `output`."""
    rows = math.ceil(len(runs) / PANELS_PER_ROW)
    columns = min(len(runs), PANELS_PER_ROW)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.4 * rows), squeeze=False, sharey=True)
    for ax, ((order, hard), record) in zip(axes.flat, sorted(runs.items(), key=lambda item: item[0][::-1])):
        steps = record["max_steps"]
        for i, stage in enumerate(record["stages"]):
            label = stage_label(stage["training_params"])
            x = [i * steps + step for step, _ in stage["eval_history"]]
            y = [score for _, score in stage["eval_history"]]
            ax.plot(x, y, color=COLOUR.get(label, "tab:gray"), marker=".", label=label)
            if i:
                ax.axvline(i * steps, color="black", linestyle="--", linewidth=0.8)
        final = record["stages"][-1]["dev"][task.main_metric]
        ax.set_title(f"{' → '.join(stage_label(s) for s in order.split())} ({TEMPLATE_KIND[hard]})\n"
                     f"lr {record.get('learning_rate')}, final dev {task.main_metric} {final * 100:.1f}",
                     fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8, loc="best")  # the corner that covers the fewest points
    for ax in axes[:, 0]:
        ax.set_ylabel(f"dev {task.main_metric}")
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, format="png", dpi=120)
    plt.close(fig)


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log_file", default="log")
    tasks = parser.add_mutually_exclusive_group(required=True)
    tasks.add_argument("--task", help="a built-in task")
    tasks.add_argument("--task_file", help="a task of your own: its task file")
    parser.add_argument("--tag", help="only records with this tag")
    parser.add_argument("--output", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    task = load_task_file(args.task_file) if args.task_file else get_task(args.task)
    runs = select_runs(read_results(args.log_file), task, args.tag)
    if not runs:
        print(f"no multi-stage record for task {task.name} in {args.log_file}"
              + (f" with tag {args.tag!r}" if args.tag else ""), file=sys.stderr)
        return 1
    title = f"{task.name}: sequential delta tuning" + (f" ({args.tag})" if args.tag else "")
    write_all({args.output: ("--output", lambda path: plot_runs(runs, task, path, title))})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
