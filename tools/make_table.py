"""The paper's Table 2 from a results log: tasks × delta combinations, without and with templates.

The table (its blocks, columns and cells) is src/table.py's; this tool picks the tasks, the tag and the
data setting (--setting, needed when the log holds both 16-shot and full-data runs) and prints it.

--compare paper puts each cell beside the paper's (src/comparison.py: the paper's numbers, the
verdicts); --csv writes that comparison as CSV, --figure one scatter PNG per block (all of them or,
when one cannot be written, none).

A task of your own gets its row with --task_file FILE (from the runs of that file's content).

Usage: python tools/make_table.py --log_file log --task SST-2 CoLA [--task_file FILE] [--tag exp] [--latex]
       python tools/make_table.py --log_file log --tag exp --compare paper [--setting full] [--csv FILE] [--figure DIR]
"""
import os
import sys
from functools import partial

from src import comparison
from src.checks import ArgumentParser
from src.errors import UserError, cli
from src.files import write_all
from src.results import read_results
from src.summary import PROTOCOLS, data_setting
from src.table import build_table, render_latex, render_markdown
from src.tasks import get_task, load_task_file


def choose_setting(records, tasks, tag, setting):
    """The data setting of the table: `setting` if given, else the only one the tasks' records hold."""
    keys = {task.key for task in tasks}
    held = sorted({data_setting(r) for r in records
                   if r.get("task_name") in keys and (tag is None or r.get("tag") == tag)})
    if setting is not None and held and setting not in held:
        raise UserError(f"--setting {setting}: the log holds no {setting} run of these tasks "
                        f"(it holds: {', '.join(held)})")
    if setting is None and len(held) > 1:
        raise UserError(f"the log holds runs of several data settings for these tasks ({', '.join(held)}): "
                        "choose one with --setting")
    return setting or (held[0] if held else None)


def figure_path(folder, result, block):
    """Where --figure puts the scatter of one block."""
    return os.path.join(folder, f"table2-{result['setting']}-{block['hard']}.png")


def plot_block(result, block, path):
    """The PNG file `path`: ours against the paper's per task cell of `block` (error bars: the stds; dashed
    diagonal: agreement), coloured by verdict. `outside` cells are numbered on the plot and listed beside it
    (task/combination, difference), largest difference first."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"within": "tab:green", "within 2x": "tab:orange", "outside": "tab:red"}
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
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


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
    tasks = [get_task(name) for name in task_names]
    if paper:
        comparison.check_tasks([task.name for task in tasks], paper)
    tasks += own  # rows of their own, from the runs of that task file's content only
    kept = {task.key: task.definition() for task in own}
    records = [r for r in read_results(args.log_file)
               if r.get("task_name") not in kept or r.get("task_file") == kept[r["task_name"]]]
    setting = choose_setting(records, tasks, args.tag, args.setting)
    table = build_table(records, tasks, args.tag, args.protocol, setting)
    logged = {r.get("task_name") for r in records if args.tag is None or r.get("tag") == args.tag}
    absent = [task.name for task in tasks if task.key not in logged]
    if absent:
        with_tag = f" with tag {args.tag!r}" if args.tag else ""
        print(f"note: {args.log_file} holds no run of {', '.join(absent)}{with_tag}: their cells are empty, and so "
              "are the Average cells (an average needs every task)", file=sys.stderr)
    if all(cell is None for block in table.blocks for row in block.rows for cell in row.cells):
        print(f"no record in {args.log_file} fills a cell of the table", file=sys.stderr)
        return 1
    if not args.compare:
        print(render_latex(table) if args.latex else render_markdown(table))
        return 0
    result = comparison.compare(table, paper)
    outputs = {args.csv: ("--csv", partial(comparison.write_csv, result))} if args.csv else {}
    figures = {figure_path(args.figure, result, block): ("--figure", partial(plot_block, result, block))
               for block in result["blocks"]} if args.figure else {}
    write_all({**outputs, **figures})
    for path in figures:
        print(f"figure: {path}", file=sys.stderr)
    print(comparison.render_latex(result) if args.latex else comparison.render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
