"""The paper's Table 2 from a results log: tasks × delta combinations, without and with templates.

A record's block comes from its template (HARD=N: only special tokens, sentences and soft prompts;
HARD=Y: a manual template); its column from its single-stage `training_params` as a set, or "none"
for zero-shot runs. Each cell is mean±std (×100) over seeds, chosen as gather_result does.

Usage: python tools/make_table.py --log_file log --task SST-2 CoLA [--tag exp] [--latex]
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.checks import ArgumentParser  # noqa: E402
from src.errors import cli  # noqa: E402
from src.results import read_results  # noqa: E402
from src.tasks import get_task, hard_of  # noqa: E402
from tools.gather_result import PROTOCOLS, gather  # noqa: E402

COLUMNS = ("none", "Adapter", "BitFit", "BitFit+Adapter", "Prompt", "Prompt+Adapter", "Prompt+BitFit",
           "Prompt+BitFit+Adapter")
GROUP = {"Prompt": "prompt", "BitFit": "bias", "Adapter": "adapter"}
COLUMN_OF_GROUPS = {frozenset(GROUP[name] for name in column.split("+")): column for column in COLUMNS[1:]}
BLOCKS = (("N", "without templates (HARD=N)"), ("Y", "with templates (HARD=Y)"))


def column_of(record):
    """The table column of a record, or None (multi-stage, full fine-tuning, ...)."""
    if record.get("do_train") is False:
        return "none"
    stages = str(record.get("training_params", "")).split()
    if len(stages) != 1:
        return None
    return COLUMN_OF_GROUPS.get(frozenset(group.strip() for group in stages[0].split(",")))


def _tunable(column, records):
    """The column's tunable share in percent (mean over its records); zero-shot tunes nothing."""
    if not records:
        return None
    return 0.0 if column == "none" else float(np.mean([r["trainable_percent"] for r in records]))


def build_table(records, task_names, tag=None, protocol="lm-bff"):
    """The table as numbers (percent): dict(tunable=[% or None per column],
    blocks=[dict(hard, title, rows=[(label, [(mean, std) or None per column])])]); the last row
    of a block is the Average (mean of means ± mean of stds, only where every task has the cell)."""
    tasks = [get_task(name) for name in task_names]
    keys = {task.key for task in tasks}
    cells = {}
    for record in records:
        column = column_of(record)
        if (column and record.get("task_name") in keys and isinstance(record.get("template"), str)
                and (tag is None or record.get("tag") == tag)):
            cells.setdefault((hard_of(record["template"]), record["task_name"], column), []).append(record)
    tunable = [_tunable(column, [r for (_, _, c), rs in cells.items() if c == column for r in rs])
               for column in COLUMNS]

    blocks = []
    for hard, title in BLOCKS:
        rows = []
        for task in tasks:
            row = []
            for column in COLUMNS:
                result = gather(cells.get((hard, task.key, column), []), {"task_name": task.key}, protocol=protocol)
                row.append(None if result is None else (100 * result["mean"], 100 * result["std"]))
            rows.append((f"{task.name} ({task.main_metric})", row))
        average = [None if None in column else tuple(np.mean(column, axis=0))
                   for column in zip(*(row for _, row in rows))]
        rows.append(("Average", average))
        blocks.append(dict(hard=hard, title=title, rows=rows))
    return dict(tunable=tunable, blocks=blocks, protocol=protocol)


def format_percent(percent):
    """0.0029 → '0.003%', 0.091 → '0.09%', 1.754 → '1.75%' (as in the paper's header)."""
    if percent is None:
        return ""
    if percent == 0:
        return "0%"
    return f"{percent:.2f}%" if percent >= 0.01 else f"{percent:.1g}%"


def _cell(cell, pm):
    return "" if cell is None else f"{cell[0]:.1f}{pm}{cell[1]:.1f}"


def render_markdown(table):
    def line(cells):
        return "| " + " | ".join(cells) + " |"

    lines = [f"Protocol: {table['protocol']}", "", line(("Task",) + COLUMNS), line(["---"] * (len(COLUMNS) + 1)),
             line(["Tunable %"] + [format_percent(p) for p in table["tunable"]])]
    for block in table["blocks"]:
        lines.append(line([f"*{block['title']}*"] + [""] * len(COLUMNS)))
        lines += [line([label] + [_cell(c, "±") for c in row]) for label, row in block["rows"]]
    return "\n".join(lines)


def render_latex(table):
    def line(cells):
        return " & ".join(cell.replace("%", r"\%").replace("_", r"\_") for cell in cells) + r" \\"

    width = len(COLUMNS) + 1
    lines = [f"% protocol: {table['protocol']}", r"\begin{tabular}{l" + "c" * len(COLUMNS) + "}", r"\hline",
             line(("Task",) + COLUMNS), line(["Tunable %"] + [format_percent(p) for p in table["tunable"]])]
    for block in table["blocks"]:
        lines += [r"\hline", rf"\multicolumn{{{width}}}{{c}}{{{block['title']}}} \\", r"\hline"]
        for label, row in block["rows"]:
            if label == "Average":
                lines.append(r"\hline")
            lines.append(line([label] + [_cell(c, "$\\pm$") for c in row]))
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log_file", default="log")
    parser.add_argument("--task", nargs="+", required=True)
    parser.add_argument("--tag", help="only records with this tag")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="lm-bff")
    parser.add_argument("--latex", action="store_true", help="LaTeX tabular instead of Markdown")
    args = parser.parse_args(argv)
    records = read_results(args.log_file)
    table = build_table(records, args.task, args.tag, args.protocol)
    logged = {r.get("task_name") for r in records if args.tag is None or r.get("tag") == args.tag}
    absent = [task.name for task in map(get_task, args.task) if task.key not in logged]
    if absent:
        with_tag = f" with tag {args.tag!r}" if args.tag else ""
        print(f"note: {args.log_file} holds no run of {', '.join(absent)}{with_tag}: their cells are empty, and so "
              "are the Average cells (an average needs every task)", file=sys.stderr)
    if all(cell is None for block in table["blocks"] for _, row in block["rows"] for cell in row):
        print(f"no record in {args.log_file} fills a cell of the table", file=sys.stderr)
        return 1
    print(render_latex(table) if args.latex else render_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
