"""The columns of a sweep, for the sweep scripts: one line per column, fields separated by `|`:

    COLUMN|TRAIN_PARAM|PROMPT|LEARNING_RATES

COLUMN is the COMBOS token (`none` = zero-shot; a combination `prompt,bias`; a multi-stage order
`prompt-bias-adapter`), TRAIN_PARAM its stages (space-separated), PROMPT `prompt` when a method
needs the template's *prompt* part, LEARNING_RATES the grid (SPEC §7, from the delta registry).

    python tools/sweep_plan.py --sweep fewshot [--combos "none lora prompt,lora"] [--lrs "1e-3 1e-4"]

Default columns: zero-shot and the paper's combinations (fewshot, fulldata); the six orders of
the paper's methods (mulstage). Unknown method in --combos: `error: ...`, exit 2.
"""
import itertools
import sys

from src.delta import SWEEP_LR_GRIDS, METHODS, Stages, lr_grid, paper_combinations, template_parts_needed
from src.checks import ArgumentParser
from src.errors import cli

SWEEPS = ("fewshot", *SWEEP_LR_GRIDS)
ZERO_SHOT = "none"


def default_columns(sweep: str):
    if sweep == "mulstage":
        paper = [m.name for m in METHODS.values() if m.in_paper]
        return ["-".join(order) for order in itertools.permutations(paper)]
    return [ZERO_SHOT] + paper_combinations()


def plan(sweep: str, columns=None, lrs=None):
    """[(column, train_param, prompt, [learning rates])] for the sweep."""
    rows = []
    for column in columns or default_columns(sweep):
        if column == ZERO_SHOT:
            rows.append((column, "", "", []))
            continue
        stages = Stages.parse(column.split("-"))
        prompt = "prompt" if template_parts_needed(stages.methods) else ""
        grid = lrs or [f"{lr:g}" for lr in lr_grid(stages.specs, sweep)]
        rows.append((column, str(stages), prompt, grid))
    return rows


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", choices=SWEEPS, default="fewshot")
    parser.add_argument("--combos", help="space-separated columns (default: the sweep's)")
    parser.add_argument("--lrs", help="space-separated learning rates for every column (default: the grids)")
    args = parser.parse_args(argv)
    for column, train_param, prompt, grid in plan(args.sweep, args.combos and args.combos.split(),
                                                  args.lrs and args.lrs.split()):
        print("|".join([column, train_param, prompt, " ".join(grid)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
