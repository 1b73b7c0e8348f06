"""The paper's Table 2 as data: tasks × delta combinations, without and with templates, from a results log.

A `Table` has one `Column` per combination (`none` = zero-shot first, then the paper's seven in the paper's
order, then any other combination of the delta registry the log holds, e.g. LoRA) and one `Block` per
template kind (HARD=N soft-only, HARD=Y manual; a record's `hard`). A block has one `Row` per task (any
`Task`, built-in or not) and the Average row; a `Cell` is mean ± std (percent) over seeds, chosen as
tools/gather_result.py does (src/summary.py). One table holds one data setting (`data_setting`: `full` for
--dev_as_test runs, else `16-shot`). tools/make_table.py prints it, src/comparison.py sets it beside the paper.
"""
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from src.delta import METHODS, combination_rank, combination_title, paper_combinations
from src.results import with_run_facts
from src.summary import data_setting, gather
from src.tasks import Task

ZERO_SHOT = "none"
AVERAGE = "Average"
BLOCKS = (("N", "without templates (HARD=N)"), ("Y", "with templates (HARD=Y)"))


@dataclass(frozen=True)
class Cell:
    mean: float                    # percent
    std: float                     # percent: population std over seeds
    seeds: Optional[int] = None    # how many seeds (None in the Average row)


@dataclass(frozen=True)
class Column:
    key: str                       # "none" or a registry combination key ("prompt,bias")
    title: str                     # "none" or its title ("Prompt+BitFit")
    tunable: Optional[float]       # share of tuned parameters in percent (mean over its records); None: no record


@dataclass(frozen=True)
class Row:
    task: str                      # the task's name, or AVERAGE
    label: str                     # "SST-2 (acc)", "Average"
    cells: Tuple[Optional[Cell], ...]  # one per column; None: no run


@dataclass(frozen=True)
class Block:
    hard: str                      # N | Y
    title: str
    rows: Tuple[Row, ...]          # one per task, then the Average


@dataclass(frozen=True)
class Table:
    columns: Tuple[Column, ...]
    blocks: Tuple[Block, ...]
    tasks: Tuple[str, ...]         # the tasks' names, in row order
    protocol: str                  # how a cell's runs are chosen (src/summary.py PROTOCOLS)
    setting: Optional[str]         # the data setting (None: every run)


def column_of(record: dict) -> Optional[str]:
    """The table column (a combination, or "none") of a record; None for a multi-stage run and for
    full fine-tuning (`all`, not a combinable method)."""
    combination = with_run_facts(record)["combination"]
    if combination == ZERO_SHOT:
        return combination
    if not combination or " " in combination or not all(METHODS[n].combinable for n in combination.split(",")):
        return None
    return combination


def columns_for(combinations: Iterable[str]) -> List[str]:
    """none, the paper's combinations, then the other combinations given, in column order."""
    paper = paper_combinations()
    extra = sorted(set(combinations) - set(paper) - {ZERO_SHOT}, key=lambda c: combination_rank(c.split(",")))
    return [ZERO_SHOT] + paper + extra


def _tunable(column, records):
    """The column's tunable share in percent (mean over its records); zero-shot tunes nothing."""
    if not records:
        return None
    return 0.0 if column == ZERO_SHOT else float(np.mean([r["trainable_percent"] for r in records]))


def average_row(rows: Sequence[Row]) -> Row:
    """Per column, the mean of the tasks' means ± the mean of their stds; empty where a task has no cell."""
    cells = [None if None in column else Cell(*map(float, np.mean([(c.mean, c.std) for c in column], axis=0)))
             for column in zip(*(row.cells for row in rows))]
    return Row(AVERAGE, AVERAGE, tuple(cells))


def build_table(records: Iterable[dict], tasks: Sequence[Task], tag: Optional[str] = None, protocol: str = "lm-bff",
                setting: Optional[str] = None) -> Table:
    """The table of `tasks` (src.tasks.Task rows, in row order) from `records`: those with `tag` (None: any)
    of the data `setting` (None: every run)."""
    task_keys = {task.key for task in tasks}
    cells = {}
    for record in map(with_run_facts, records):
        column = column_of(record)
        if (column and record.get("task_name") in task_keys and record.get("hard")
                and (tag is None or record.get("tag") == tag)
                and (setting is None or data_setting(record) == setting)):
            cells.setdefault((record["hard"], record["task_name"], column), []).append(record)
    keys = columns_for(column for _, _, column in cells)
    columns = tuple(Column(key, ZERO_SHOT if key == ZERO_SHOT else combination_title(key),
                           _tunable(key, [r for (_, _, c), rs in cells.items() if c == key for r in rs]))
                    for key in keys)

    blocks = []
    for hard, title in BLOCKS:
        rows = []
        for task in tasks:
            results = [gather(cells.get((hard, task.key, key), []), {"task_name": task.key}, protocol=protocol)
                       for key in keys]
            rows.append(Row(task.name, f"{task.name} ({task.main_metric})",
                            tuple(None if r is None else Cell(100 * r["mean"], 100 * r["std"], r["n"])
                                  for r in results)))
        blocks.append(Block(hard, title, (*rows, average_row(rows))))
    return Table(columns, tuple(blocks), tuple(task.name for task in tasks), protocol, setting)


def format_percent(percent: Optional[float]) -> str:
    """0.0029 → '0.003%', 0.091 → '0.09%', 1.754 → '1.75%' (as in the paper's header)."""
    if percent is None:
        return ""
    if percent == 0:
        return "0%"
    return f"{percent:.2f}%" if percent >= 0.01 else f"{percent:.1g}%"


def _cell(cell, pm):
    return "" if cell is None else f"{cell.mean:.1f}{pm}{cell.std:.1f}"


def render_markdown(table: Table) -> str:
    def line(cells):
        return "| " + " | ".join(cells) + " |"

    titles = [column.title for column in table.columns]
    lines = [f"Protocol: {table.protocol}; data: {table.setting}", "", line(["Task"] + titles),
             line(["---"] * (len(titles) + 1)),
             line(["Tunable %"] + [format_percent(column.tunable) for column in table.columns])]
    for block in table.blocks:
        lines.append(line([f"*{block.title}*"] + [""] * len(titles)))
        lines += [line([row.label] + [_cell(c, "±") for c in row.cells]) for row in block.rows]
    return "\n".join(lines)


def render_latex(table: Table) -> str:
    def line(cells):
        return " & ".join(cell.replace("%", r"\%").replace("_", r"\_") for cell in cells) + r" \\"

    titles = [column.title for column in table.columns]
    width = len(titles) + 1
    lines = [f"% protocol: {table.protocol}; data: {table.setting}",
             r"\begin{tabular}{l" + "c" * len(titles) + "}", r"\hline",
             line(["Task"] + titles), line(["Tunable %"] + [format_percent(c.tunable) for c in table.columns])]
    for block in table.blocks:
        lines += [r"\hline", rf"\multicolumn{{{width}}}{{c}}{{{block.title}}} \\", r"\hline"]
        for row in block.rows:
            if row.task == AVERAGE:
                lines.append(r"\hline")
            lines.append(line([row.label] + [_cell(c, "$\\pm$") for c in row.cells]))
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)
