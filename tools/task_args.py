"""Print the per-task run.py arguments, one per line, for the shell scripts (`mapfile -t ARGS < <(...)`).

Everything comes from `src/tasks.py` (SPEC §8), so the scripts never spell out templates or label words:

    $ python tools/task_args.py --task SST-2 --hard Y --prompt
    --task_name
    SST-2
    --template
    *cls*prompt*sent_0*_It_was*mask*.*sep+*
    --mapping
    {'0':'terrible','1':'great'}

followed by the task's extra arguments (e.g. MNLI: --max_seq_length 512 --num_sample 4) and, with
--fulldata, its full-data arguments (QNLI: --max_seq_length 512).
Unknown task or bad --hard: `error: ...` on stderr, exit 2.
"""
import sys

from src.checks import ArgumentParser
from src.errors import cli
from src.tasks import get_task


def task_arguments(name, hard="Y", prompt=False, fulldata=False):
    """The run.py arguments of task `name` as a list of strings (later ones override earlier ones)."""
    task = get_task(name)
    return ["--task_name", task.name, "--template", task.template(hard, prompt),
            "--mapping", task.mapping, *task.extra_args, *(task.fulldata_args if fulldata else ())]


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, help="task name (SST-2, CoLA, MNLI, ...), any case")
    parser.add_argument("--hard", default="Y", help="Y: manual template; N: soft-only template")
    parser.add_argument("--prompt", action="store_true", help="insert the soft prompt (*prompt*) into the template")
    parser.add_argument("--fulldata", action="store_true", help="add the task's full-data arguments")
    args = parser.parse_args(argv)
    lines = task_arguments(args.task, args.hard, args.prompt, args.fulldata)
    if any("\n" in line for line in lines):  # one argument per line is the contract with the scripts
        raise UserError("an argument contains a newline")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
