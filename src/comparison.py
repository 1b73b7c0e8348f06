"""Our Table 2 beside the paper's, cell by cell (`tools/make_table.py --compare paper`).

The paper's numbers are data, `data/reference/paper_table2.csv`: one row per (setting, hard, task,
combination) of its four blocks (full / 16-shot data × without (N) / with (Y) manual templates),
8 GLUE tasks + Average × 8 columns (`none` = zero-shot, then the paper's seven combinations as the
delta registry spells them). mean and std are percent; std is numpy's population std over seeds,
empty for `none` (a single zero-shot evaluation); an Average is the mean of the 8 task means ± the
mean of the 8 task stds. `source` is `paper` (printed in Table 2 of Ding et al., Nature Machine
Intelligence 5:220-235, 2023) or `fs-pba-repo`: the available copy of the paper's page breaks off
inside the 16-shot block, so its other cells are the authors' released result files (FS-PBA @
8c19d3c, `result/<TASK>/<TASK>-{N,Y}-<combination>.out`, aggregated as their draw_table.py does);
where that snapshot reproduces printed cells it matches them exactly, but it is not the paper.
`note` flags single cells (degenerate runs, seed counts, where the repo differs from the paper).

How the paper chose a cell's runs (PAPER_SELECTION): 16-shot, the learning rate with the best mean
*test* score over the data seeds (13, 42, 100 for nearly every cell), i.e. our `--protocol
reference`; full data, the best mean dev score, the dev set being the test set.

A cell's verdict: `within` when |ours - paper| <= max(std ours, std paper) + ROUNDING (the paper
prints one decimal), `within 2x` when <= 2 * max(...) + ROUNDING, else `outside`; `missing` when we
have no run for it.
"""
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from src.delta import combination_title
from src.errors import UserError
from src.summary import FULL_DATA, PROTOCOLS
from src.table import AVERAGE, Table

REFERENCE_CSV = Path(__file__).resolve().parents[1] / "data" / "reference" / "paper_table2.csv"
ROUNDING = 0.05
VERDICTS = ("within", "within 2x", "outside", "missing")
PAPER_SELECTION = {
    "16-shot": "the learning rate with the best mean test score over seeds (our --protocol reference)",
    FULL_DATA: "the learning rate with the best mean dev score, dev being the test set (our --protocol "
               "reference on --dev_as_test runs)",
}
CSV_FIELDS = ("setting", "hard", "task", "combination", "ours_mean", "ours_std", "ours_seeds", "paper_mean",
              "paper_std", "source", "difference", "verdict", "protocol", "note")


@dataclass(frozen=True)
class PaperCell:
    mean: float
    std: Optional[float]  # None: zero-shot, one evaluation
    source: str           # paper | fs-pba-repo
    note: str


@dataclass(frozen=True)
class CellComparison:
    task: str                              # the paper's task name, or Average
    combination: str                       # "none" or a registry combination key
    ours: Optional[Tuple[float, float]]    # mean, std (percent); None: no run of ours
    seeds: Optional[int]                   # our number of seeds (None for Average and missing cells)
    paper: PaperCell
    verdict: str

    @property
    def difference(self) -> Optional[float]:
        return None if self.ours is None else self.ours[0] - self.paper.mean

    @property
    def title(self) -> str:
        return self.combination if self.combination == "none" else combination_title(self.combination)


def load_paper(path: Path = REFERENCE_CSV) -> Dict[Tuple[str, str, str, str], PaperCell]:
    """(setting, hard, task, combination) → the paper's cell."""
    with open(path, newline="", encoding="utf-8") as f:
        return {(row["setting"], row["hard"], row["task"], row["combination"]):
                PaperCell(float(row["mean"]), float(row["std"]) if row["std"] else None, row["source"], row["note"])
                for row in csv.DictReader(f)}


def paper_tasks(paper: Dict[Tuple[str, str, str, str], PaperCell]) -> List[str]:
    """The paper's tasks, in its row order."""
    return list(dict.fromkeys(task for _, _, task, _ in paper if task != AVERAGE))


def check_tasks(task_names: List[str], paper: dict) -> None:
    """A UserError naming the tasks that the paper's table has no row for."""
    unknown = [name for name in task_names if name not in paper_tasks(paper)]
    if unknown:
        raise UserError(f"the paper's Table 2 has no row for {', '.join(unknown)} "
                        f"(its tasks: {', '.join(paper_tasks(paper))})")


def verdict(ours: Optional[Tuple[float, float]], paper: PaperCell) -> str:
    if ours is None:
        return "missing"
    spread = max(ours[1], paper.std or 0.0)
    difference = abs(ours[0] - paper.mean)
    if difference <= spread + ROUNDING:
        return "within"
    return "within 2x" if difference <= 2 * spread + ROUNDING else "outside"


def compare(table: Table, paper: Optional[dict] = None) -> dict:
    """Each cell of `table` (src/table.py) that the paper has, beside the paper's.

    Returns dict(setting, protocol, average, tasks, tasks_paper, blocks=[dict(hard, title,
    cells=[CellComparison], counts)]); `average` says whether the Average rows are compared (only
    when the table's tasks are the paper's)."""
    paper = load_paper() if paper is None else paper
    setting = table.setting
    settings = sorted({key[0] for key in paper})
    if setting not in settings:
        raise UserError(f"the paper's Table 2 has no {setting} block (it has: {', '.join(settings)})")
    tasks = list(table.tasks)
    check_tasks(tasks, paper)
    average = sorted(tasks) == sorted(paper_tasks(paper))
    blocks = []
    for block in table.blocks:
        cells = []
        for row in block.rows:
            if row.task == AVERAGE and not average:
                continue
            for column, cell in zip(table.columns, row.cells):
                reference = paper.get((setting, block.hard, row.task, column.key))
                if reference is not None:
                    ours = None if cell is None else (cell.mean, cell.std)
                    cells.append(CellComparison(row.task, column.key, ours, None if cell is None else cell.seeds,
                                                reference, verdict(ours, reference)))
        counts = {name: sum(cell.verdict == name for cell in cells) for name in VERDICTS}
        blocks.append(dict(hard=block.hard, title=f"{setting}, {block.title}", cells=cells, counts=counts))
    return dict(setting=setting, protocol=table.protocol, average=average, tasks=tasks,
                tasks_paper=paper_tasks(paper), blocks=blocks)


def header_lines(comparison: dict) -> List[str]:
    """What the numbers are: our protocol, how the paper chose its cells, what a verdict means."""
    protocol = comparison["protocol"]
    lines = [f"Ours vs the paper's Table 2, {comparison['setting']} data",
             f"Ours: protocol {protocol} ({PROTOCOLS[protocol]}); mean ± population std over seeds, x100.",
             f"Paper: {comparison['setting']} cells chose {PAPER_SELECTION[comparison['setting']]}; source "
             "paper = printed in the paper, fs-pba-repo = the authors' released result files "
             "(data/reference/paper_table2.csv).",
             f"Verdict: within = |diff| <= max(std ours, std paper) + {ROUNDING} (the paper's rounding); "
             f"within 2x = <= 2 max(...) + {ROUNDING}; outside = beyond; missing = no run of ours."]
    if not comparison["average"]:
        lines.append(f"Average rows not compared: the paper's are over its {len(comparison['tasks_paper'])} tasks, "
                     f"not over {', '.join(comparison['tasks'])}.")
    return lines


def counts_text(block: dict) -> str:
    return ", ".join(f"{n} {name}" for name, n in block["counts"].items())


def _cells(cell: CellComparison, pm: str) -> List[str]:
    """Ours, seeds, paper, difference, verdict as printed."""
    ours = "missing" if cell.ours is None else f"{cell.ours[0]:.1f}{pm}{cell.ours[1]:.1f}"
    paper = f"{cell.paper.mean:.1f}" + ("" if cell.paper.std is None else f"{pm}{cell.paper.std:.1f}")
    difference = "" if cell.difference is None else f"{round(cell.difference, 1) + 0.0:+.1f}"  # no "-0.0"
    return [ours, "" if cell.seeds is None else str(cell.seeds), paper, cell.paper.source, difference, cell.verdict]


COLUMNS = ["Task", "Combination", "Ours", "Seeds", "Paper", "Source", "Diff", "Verdict"]


def render_markdown(comparison: dict) -> str:
    def line(cells):
        return "| " + " | ".join(cells) + " |"

    lines = header_lines(comparison)
    for block in comparison["blocks"]:
        lines += ["", f"{block['title']}: {counts_text(block)}", "",
                  line(COLUMNS + ["Note"]), line(["---"] * (len(COLUMNS) + 1))]
        lines += [line([cell.task, cell.title] + _cells(cell, "±") + [cell.paper.note]) for cell in block["cells"]]
    return "\n".join(lines)


def render_latex(comparison: dict) -> str:
    def line(cells):
        return " & ".join(cells) + r" \\"

    lines = [f"% {text}" for text in header_lines(comparison)]
    lines += [r"\begin{tabular}{ll" + "c" * (len(COLUMNS) - 3) + "l}", r"\hline", line(COLUMNS)]
    for block in comparison["blocks"]:
        lines += [r"\hline", rf"\multicolumn{{{len(COLUMNS)}}}{{l}}{{{block['title']}: {counts_text(block)}}} \\",
                  r"\hline"]
        lines += [line([cell.task, cell.title] + _cells(cell, r"$\pm$")) for cell in block["cells"]]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


def write_csv(comparison: dict, path: str) -> None:
    """One row per compared cell (CSV_FIELDS); numbers in percent, unrounded."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for block in comparison["blocks"]:
            for cell in block["cells"]:
                ours = ("", "") if cell.ours is None else [round(value, 4) for value in cell.ours]
                writer.writerow(dict(
                    setting=comparison["setting"], hard=block["hard"], task=cell.task,
                    combination=cell.combination, ours_mean=ours[0], ours_std=ours[1],
                    ours_seeds="" if cell.seeds is None else cell.seeds, paper_mean=cell.paper.mean,
                    paper_std="" if cell.paper.std is None else cell.paper.std, source=cell.paper.source,
                    difference="" if cell.difference is None else round(cell.difference, 4), verdict=cell.verdict,
                    protocol=comparison["protocol"], note=cell.paper.note))
