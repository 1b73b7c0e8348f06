"""The paper's Table 2 from a results log: tasks × delta combinations, without and with templates.

A record's block is its template kind (HARD=N soft-only, HARD=Y manual; the record's `hard`), its
column its single-stage combination (the record's `combination`; "none" for zero-shot). Columns:
none, then the paper's seven combinations in the paper's order, then any other combination of the
delta registry that the log holds for these tasks (e.g. LoRA). Each cell is mean±std (×100) over
seeds, chosen as tools/gather_result.py does. One table holds one data setting (`data_setting` in
src/summary.py: `full` for --dev_as_test runs, else `16-shot`); --setting picks it when the log
holds both.

--compare paper puts each cell beside the paper's (src/comparison.py: the paper's numbers, the
verdicts); --csv writes that comparison as CSV, --figure one scatter PNG per block.

A task of your own gets its row with --task_file FILE (from the runs of that file's content).

Usage: python tools/make_table.py --log_file log --task SST-2 CoLA [--task_file FILE] [--tag exp] [--latex]
       python tools/make_table.py --log_file log --tag exp --compare paper [--setting full] [--csv FILE] [--figure DIR]
"""
import os
import sys

import numpy as np

from src import comparison
from src.checks import ArgumentParser
from src.delta import METHODS, combination_rank, combination_title, paper_combinations
from src.errors import UserError, cli
from src.results import read_results, with_run_facts
from src.summary import PROTOCOLS, data_setting, gather
from src.tasks import get_task, load_task_file

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


def build_table(records, task_names, tag=None, protocol="lm-bff", setting=None):
    """The table as numbers (percent): dict(columns=[title per column], keys=[combination per column],
    tunable=[% or None per column], tasks=[task names], setting, protocol, blocks=[dict(hard, title,
    rows=[(label, [(mean, std) or None per column])], seeds=[[number of seeds or None per column] per
    task])]); the last row of a block is the Average (mean of means ± mean of stds, only where every
    task has the cell). `setting`: only the runs of this data setting (None: every run)."""
    tasks = [get_task(name) for name in task_names]
    keys = {task.key for task in tasks}
    cells = {}
    for record in map(with_run_facts, records):
        column = column_of(record)
        if (column and record.get("task_name") in keys and record.get("hard")
                and (tag is None or record.get("tag") == tag)
                and (setting is None or data_setting(record) == setting)):
            cells.setdefault((record["hard"], record["task_name"], column), []).append(record)
    columns = columns_for(column for _, _, column in cells)
    tunable = [_tunable(column, [r for (_, _, c), rs in cells.items() if c == column for r in rs])
               for column in columns]

    blocks = []
    for hard, title in BLOCKS:
        rows, seeds = [], []
        for task in tasks:
            results = [gather(cells.get((hard, task.key, column), []), {"task_name": task.key}, protocol=protocol)
                       for column in columns]
            rows.append((f"{task.name} ({task.main_metric})",
                         [None if r is None else (100 * r["mean"], 100 * r["std"]) for r in results]))
            seeds.append([None if r is None else r["n"] for r in results])
        average = [None if None in column else tuple(np.mean(column, axis=0))
                   for column in zip(*(row for _, row in rows))]
        rows.append(("Average", average))
        blocks.append(dict(hard=hard, title=title, rows=rows, seeds=seeds))
    titles = [ZERO_SHOT if c == ZERO_SHOT else combination_title(c) for c in columns]
    return dict(columns=titles, keys=columns, tunable=tunable, blocks=blocks, protocol=protocol,
                tasks=[task.name for task in tasks], setting=setting)


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
    lines = [f"Protocol: {table['protocol']}; data: {table['setting']}", "", line(["Task"] + columns),
             line(["---"] * (len(columns) + 1)),
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
    lines = [f"% protocol: {table['protocol']}; data: {table['setting']}",
             r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\hline",
             line(["Task"] + columns), line(["Tunable %"] + [format_percent(p) for p in table["tunable"]])]
    for block in table["blocks"]:
        lines += [r"\hline", rf"\multicolumn{{{width}}}{{c}}{{{block['title']}}} \\", r"\hline"]
        for label, row in block["rows"]:
            if label == "Average":
                lines.append(r"\hline")
            lines.append(line([label] + [_cell(c, "$\\pm$") for c in row]))
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


def choose_setting(records, task_names, tag, setting):
    """The data setting of the table: `setting` if given, else the only one the tasks' records hold."""
    keys = {get_task(name).key for name in task_names}
    held = sorted({data_setting(r) for r in records
                   if r.get("task_name") in keys and (tag is None or r.get("tag") == tag)})
    if setting is not None and held and setting not in held:
        raise UserError(f"--setting {setting}: the log holds no {setting} run of these tasks "
                        f"(it holds: {', '.join(held)})")
    if setting is None and len(held) > 1:
        raise UserError(f"the log holds runs of several data settings for these tasks ({', '.join(held)}): "
                        "choose one with --setting")
    return setting or (held[0] if held else None)


def plot_comparison(result, folder):
    """One PNG per block in `folder`: ours against the paper's per task cell (error bars: the stds;
    dashed diagonal: agreement), coloured by verdict. `outside` cells are numbered on the plot and
    listed beside it (task/combination, difference), largest difference first. Returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"within": "tab:green", "within 2x": "tab:orange", "outside": "tab:red"}
    os.makedirs(folder, exist_ok=True)
    paths = []
    for block in result["blocks"]:
        cells = [cell for cell in block["cells"] if cell.ours is not None and cell.task != comparison.AVERAGE]
        outliers = sorted((c for c in cells if c.verdict == "outside"), key=lambda c: -abs(c.difference))
        fig, (ax, side) = plt.subplots(1, 2, figsize=(11, max(7, 1 + 0.16 * len(outliers))),
                                       gridspec_kw=dict(width_ratios=(7, 4)))
        for name, colour in colours.items():
            group = [cell for cell in cells if cell.verdict == name]
            if group:
                ax.errorbar([c.paper.mean for c in group], [c.ours[0] for c in group],
                            xerr=[c.paper.std or 0 for c in group], yerr=[c.ours[1] for c in group], fmt="o",
                            color=colour, alpha=0.8, markersize=4, capsize=2, elinewidth=0.8,
                            label=f"{name} ({len(group)})")
        values = [v for c in cells for v in (c.paper.mean, c.ours[0])] or [0, 100]
        low, high = min(values) - 5, max(values) + 5
        ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--", label="ours = paper")
        for number, cell in enumerate(outliers, 1):
            ax.annotate(str(number), (cell.paper.mean, cell.ours[0]), fontsize=7, color="tab:red",
                        xytext=(3, 3), textcoords="offset points")
        ax.set(xlim=(low, high), ylim=(low, high), aspect="equal", xlabel="paper (task metric x100)",
               ylabel=f"ours (protocol {result['protocol']})")
        ax.set_title(f"{block['title']}\ncells with Average: {comparison.counts_text(block)}", fontsize=10)
        ax.legend(title="task cells", fontsize=8, title_fontsize=8, loc="upper left")
        side.axis("off")
        listing = [f"{n:>2}  {c.task}/{c.title}  {c.difference:+.1f}" for n, c in enumerate(outliers, 1)]
        side.text(0, 1, "\n".join(["outside (ours - paper):"] + listing), va="top", family="monospace",
                  fontsize=7, transform=side.transAxes)
        path = os.path.join(folder, f"table2-{result['setting']}-{block['hard']}.png")
        fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log_file", default="log")
    parser.add_argument("--task", nargs="+", help="tasks (rows); with --compare paper, default: the paper's 8")
    parser.add_argument("--task_file", nargs="+", help="tasks of your own (rows): their task files")
    parser.add_argument("--tag", help="only records with this tag")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="lm-bff", help="how a cell's runs are chosen")
    parser.add_argument("--setting", help="data setting: 16-shot or full (--dev_as_test runs); "
                        "default: the one the log holds")
    parser.add_argument("--latex", action="store_true", help="LaTeX tabular instead of Markdown")
    parser.add_argument("--compare", choices=["paper"], help="each cell beside the paper's Table 2")
    parser.add_argument("--csv", help="--compare: also write the comparison to this CSV file")
    parser.add_argument("--figure", help="--compare: write one scatter PNG per block into this folder")
    args = parser.parse_args(argv)
    if not args.compare and (args.csv or args.figure):
        raise UserError("--csv and --figure need --compare paper")
    paper = comparison.load_paper() if args.compare else None
    own = [load_task_file(path) for path in args.task_file or []]
    if paper and own:
        raise UserError(f"--compare paper: the paper's Table 2 has no row for {own[0].name} (a task of your own, "
                        f"{own[0].source}); leave out --compare or --task_file")
    task_names = args.task or (comparison.paper_tasks(paper) if paper else [])
    if not task_names and not own:
        raise UserError("--task is required (or --task_file, or --compare paper, whose default is the paper's tasks)")
    task_names = [get_task(name).name for name in task_names]
    if paper:
        comparison.check_tasks(task_names, paper)
    task_names += own  # rows of their own, from the runs of that task file's content only
    kept = {task.key: task.definition() for task in own}
    records = [r for r in read_results(args.log_file)
               if r.get("task_name") not in kept or r.get("task_file") == kept[r["task_name"]]]
    setting = choose_setting(records, task_names, args.tag, args.setting)
    table = build_table(records, task_names, args.tag, args.protocol, setting)
    logged = {r.get("task_name") for r in records if args.tag is None or r.get("tag") == args.tag}
    absent = [task.name for task in map(get_task, task_names) if task.key not in logged]
    if absent:
        with_tag = f" with tag {args.tag!r}" if args.tag else ""
        print(f"note: {args.log_file} holds no run of {', '.join(absent)}{with_tag}: their cells are empty, and so "
              "are the Average cells (an average needs every task)", file=sys.stderr)
    if all(cell is None for block in table["blocks"] for _, row in block["rows"] for cell in row):
        print(f"no record in {args.log_file} fills a cell of the table", file=sys.stderr)
        return 1
    if not args.compare:
        print(render_latex(table) if args.latex else render_markdown(table))
        return 0
    result = comparison.compare(table, paper)
    if args.csv:
        comparison.write_csv(result, args.csv)
    if args.figure:
        try:
            paths = plot_comparison(result, args.figure)
        except OSError as error:
            raise UserError(f"--figure: cannot write in {args.figure!r}: {error}") from error
        for path in paths:
            print(f"figure: {path}", file=sys.stderr)
    print(comparison.render_latex(result) if args.latex else comparison.render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
