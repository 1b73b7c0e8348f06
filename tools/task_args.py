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
--fulldata, its full-data arguments (QNLI: --max_seq_length 512). A task of your own: --task_file FILE
(its task file) instead of --task; `--task_file FILE` then follows the task's name.
Unknown task, bad task file or bad --hard: `error: ...` on stderr, exit 2.
"""
import sys

from src.checks import ArgumentParser
from src.errors import UserError, cli
from src.tasks import named_task


def task_arguments(name=None, hard="Y", prompt=False, fulldata=False, task_file=None):
    """The run.py arguments of task `name` (or of the task file `task_file`) as a list of strings (later ones
    override earlier ones)."""
    task = named_task(name, task_file, "--task")
    return ["--task_name", task.name, *(["--task_file", task_file] if task_file else []),
            "--template", task.template(hard, prompt), "--mapping", task.mapping,
            *task.extra_args, *(task.fulldata_args if fulldata else ())]


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", help="task name (SST-2, CoLA, MNLI, ...), any case")
    parser.add_argument("--task_file", help="a task of your own: its task file (README 'Your own task')")
    parser.add_argument("--hard", default="Y", help="Y: manual template; N: soft-only template")
    parser.add_argument("--prompt", action="store_true", help="insert the soft prompt (*prompt*) into the template")
    parser.add_argument("--fulldata", action="store_true", help="add the task's full-data arguments")
    args = parser.parse_args(argv)
    lines = task_arguments(args.task, args.hard, args.prompt, args.fulldata, args.task_file)
    if any("\n" in line for line in lines):  # one argument per line is the contract with the scripts
        raise UserError("an argument contains a newline")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
