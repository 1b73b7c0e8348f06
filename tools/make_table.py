"""The paper's Table 2 from a results log: tasks × delta combinations, without and with templates.

A record's block is its template kind (HARD=N soft-only, HARD=Y manual; the record's `hard`), its
column its single-stage combination (the record's `combination`; "none" for zero-shot). Columns:
none, then the paper's seven combinations in the paper's order, then any other combination of the
delta registry that the log holds for these tasks (e.g. LoRA). Each cell is mean±std (×100) over
seeds, chosen as tools/gather_result.py does.

Usage: python tools/make_table.py --log_file log --task SST-2 CoLA [--tag exp] [--latex]
"""
import sys

import numpy as np

from src.checks import ArgumentParser
from src.delta import METHODS, combination_rank, combination_title, paper_combinations
from src.errors import cli
from src.results import read_results, with_run_facts
from src.summary import PROTOCOLS, gather
from src.tasks import get_task

ZERO_SHOT = "none"
BLOCKS = (("N", "without templates (HARD=N)"), ("Y", "with templates (HARD=Y)"))


def column_of(record):
    """The table column (a combination, or "none") of a record; None for a multi-stage run and for
    full fine-tuning (`all`, not a combinable method)."""
    combination = with_run_facts(record)["combination"]
    if combination == ZERO_SHOT:
        return combination
    if not combination or " " in combination or not all(METHODS[n].combinable for n in combination.split(",")):
        return None
    return combination


def columns_for(combinations):
    """none, the paper's combinations, then the other combinations given, in column order."""
    paper = paper_combinations()
    extra = sorted(set(combinations) - set(paper) - {ZERO_SHOT}, key=lambda c: combination_rank(c.split(",")))
    return [ZERO_SHOT] + paper + extra


def _tunable(column, records):
    """The column's tunable share in percent (mean over its records); zero-shot tunes nothing."""
    if not records:
        return None
    return 0.0 if column == ZERO_SHOT else float(np.mean([r["trainable_percent"] for r in records]))


def build_table(records, task_names, tag=None, protocol="lm-bff"):
    """The table as numbers (percent): dict(columns=[title per column], tunable=[% or None per
    column], blocks=[dict(hard, title, rows=[(label, [(mean, std) or None per column])])]); the
    last row of a block is the Average (mean of means ± mean of stds, only where every task has the cell)."""
    tasks = [get_task(name) for name in task_names]
    keys = {task.key for task in tasks}
    cells = {}
    for record in map(with_run_facts, records):
        column = column_of(record)
        if (column and record.get("task_name") in keys and record.get("hard")
                and (tag is None or record.get("tag") == tag)):
            cells.setdefault((record["hard"], record["task_name"], column), []).append(record)
    columns = columns_for(column for _, _, column in cells)
    tunable = [_tunable(column, [r for (_, _, c), rs in cells.items() if c == column for r in rs])
               for column in columns]

    blocks = []
    for hard, title in BLOCKS:
        rows = []
        for task in tasks:
            row = []
            for column in columns:
                result = gather(cells.get((hard, task.key, column), []), {"task_name": task.key}, protocol=protocol)
                row.append(None if result is None else (100 * result["mean"], 100 * result["std"]))
            rows.append((f"{task.name} ({task.main_metric})", row))
        average = [None if None in column else tuple(np.mean(column, axis=0))
                   for column in zip(*(row for _, row in rows))]
        rows.append(("Average", average))
        blocks.append(dict(hard=hard, title=title, rows=rows))
    titles = [ZERO_SHOT if c == ZERO_SHOT else combination_title(c) for c in columns]
    return dict(columns=titles, tunable=tunable, blocks=blocks, protocol=protocol)


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

    columns = table["columns"]
    lines = [f"Protocol: {table['protocol']}", "", line(["Task"] + columns), line(["---"] * (len(columns) + 1)),
             line(["Tunable %"] + [format_percent(p) for p in table["tunable"]])]
    for block in table["blocks"]:
        lines.append(line([f"*{block['title']}*"] + [""] * len(columns)))
        lines += [line([label] + [_cell(c, "±") for c in row]) for label, row in block["rows"]]
    return "\n".join(lines)


def render_latex(table):
    def line(cells):
        return " & ".join(cell.replace("%", r"\%").replace("_", r"\_") for cell in cells) + r" \\"

    columns = table["columns"]
    width = len(columns) + 1
    lines = [f"% protocol: {table['protocol']}", r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\hline",
             line(["Task"] + columns), line(["Tunable %"] + [format_percent(p) for p in table["tunable"]])]
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
