"""Command lines of several runs: `--learning_rate` and `--seed` with several values.

    python run.py ... --learning_rate 1e-3 3e-4 --seed 13 21 42 --data_dir 'data/k-shot/SST-2/16-{seed}'

is one run per (learning rate, seed), learning rates outer, trained together (`src/packed.py`).
`{seed}` and `{learning_rate}` in any argument become the run's own value (the data split follows
the seed through `--data_dir`). With several runs, each gets its own `--output_dir`: a folder
`lr{learning_rate}-seed{seed}` (the flags given) under the given one, unless that has a placeholder
(then every flag with several values needs its own, or the runs would share a folder).
run.py expands its command line before any model or data loads; the values are checked by the
parser's own rules (`src.arguments.parse_value`).
"""
import dataclasses
import itertools
import os

from src.errors import UserError
from src.placeholders import PACKED_FLAGS, placeholder


def run_label(seed, learning_rate) -> str:
    """How an error line names one run of a pack: `seed=13 learning_rate=0.0003`."""
    return f"seed={seed} learning_rate={float(learning_rate):g}"


def last_flag(argv, flag):
    """(index of the last `flag` in `argv`, as `flag VALUE` or `flag=VALUE`, or None; its value or None)."""
    position = value = None
    for i, arg in enumerate(argv):
        name, sep, inline = arg.partition("=")
        if name == flag:
            position, value = i, inline if sep else (argv[i + 1:i + 2] or [""])[0]
    return position, value


def flag_value(argv, flag, default):
    """The last value of `flag` in an argument list, or `default`."""
    value = last_flag(argv, flag)[1]
    return default if value is None else value


def label_of(argv) -> str:
    """run_label of one run's argument list (as expand_argv gives it)."""
    return run_label(flag_value(argv, "--seed", "?"), flag_value(argv, "--learning_rate", "nan"))


def expand_argv(argv):
    """One argument list per run of a command line (a single run's list unchanged).

    A later `--seed`/`--learning_rate` replaces an earlier one (the scripts put extra arguments last);
    several values come from one occurrence. Every value is checked here, before any run starts:
    a bad value, two values that parse equal and runs that would share an output folder are errors."""
    argv = list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return [argv]
    skeleton, values, i = [], {}, 0
    while i < len(argv):
        flag, sep, inline = argv[i].partition("=")
        if flag not in PACKED_FLAGS:
            skeleton.append(argv[i])
            i += 1
            continue
        end = i + 1
        if not sep:
            while end < len(argv) and not argv[end].startswith("--"):
                end += 1
        if flag in values:
            skeleton.remove(flag)
        values[flag] = [inline] if sep else argv[i + 1:end]
        skeleton.append(flag)
        i = end
    for flag, given in values.items():
        check_values(flag, given)
    for flag in PACKED_FLAGS:
        if flag not in values and any(placeholder(flag) in arg for arg in skeleton):
            raise UserError(f"{placeholder(flag)} is used but {flag} is not given")
    flags = [flag for flag in PACKED_FLAGS if flag in values]
    if any(len(given) > 1 for given in values.values()):
        skeleton = with_run_folders(skeleton, "-".join(PACKED_FLAGS[flag] + placeholder(flag) for flag in flags))
    runs = []
    for combination in itertools.product(*(values[flag] for flag in flags)):
        chosen = dict(zip(flags, combination))
        run = []
        for arg in skeleton:
            if arg in chosen:
                run += [arg, chosen[arg]]
                continue
            for flag, value in chosen.items():
                arg = arg.replace(placeholder(flag), value)
            run.append(arg)
        runs.append(run)
    check_folders(runs)
    return runs


def check_values(flag, given):
    """Each value of a packed flag is one the parser accepts, and no two are equal once parsed
    (`--seed 13 013`, `--learning_rate 1e-3 0.001` would train the same run twice)."""
    from src.arguments import parse_value
    if not given:
        raise UserError(f"{flag} needs a value")
    seen = {}
    for text in given:
        value = parse_value(flag[2:], text)
        if value in seen:
            same = f"{text} is given twice" if seen[value] == text else f"{seen[value]} and {text} are the same value"
            raise UserError(f"{flag}: {same} (the same run twice)")
        seen[value] = text


def check_folders(runs):
    """Runs of a pack must not share an output folder (one delta would overwrite the other)."""
    if len(runs) < 2:
        return
    folders = {}
    for run in runs:
        folder = os.path.normpath(output_dir_of(run)[1])
        if folder in folders:
            other = folders[folder]
            differing = [flag for flag in PACKED_FLAGS if flag in run and
                         run[run.index(flag) + 1] != other[other.index(flag) + 1]]
            raise UserError(f"--output_dir: runs of different {' and '.join(differing)} values would all write "
                            f"{folder}; put {' and '.join(map(placeholder, differing))} in it, or no placeholder "
                            "(a folder per run under it)")
        folders[folder] = run


def output_dir_of(argv):
    """(index of the last --output_dir in `argv` or None, its value or the default)."""
    from src.arguments import DeltaTrainingArguments
    position, output_dir = last_flag(argv, "--output_dir")
    if position is None:
        output_dir = next(f.default for f in dataclasses.fields(DeltaTrainingArguments) if f.name == "output_dir")
    return position, output_dir


def with_run_folders(skeleton, folder):
    """Give each run its own --output_dir: `folder` (e.g. lr{learning_rate}-seed{seed}) under the
    given one (or the default), unless that has a placeholder already."""
    position, output_dir = output_dir_of(skeleton)
    if any(placeholder(flag) in output_dir for flag in PACKED_FLAGS):
        return skeleton
    argument = ["--output_dir", f"{output_dir.rstrip('/')}/{folder}"]
    if position is None:
        return skeleton + argument
    width = 1 if "=" in skeleton[position] else 2
    return skeleton[:position] + argument + skeleton[position + width:]
