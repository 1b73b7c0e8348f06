"""The flags that take several values on run.py's command line (a pack of runs) and their placeholders:
`{seed}` and `{learning_rate}` in any argument become the run's own value (src/multirun.py), in a JSON
argument file's strings too (src/arguments.py)."""
from src.errors import UserError

# flag -> its part of a run's folder name; product order: learning rates outer, seeds inner
PACKED_FLAGS = {"--learning_rate": "lr", "--seed": "seed"}


def placeholder(flag):
    return "{" + flag[2:] + "}"


def fill_placeholders(values: dict, source: str) -> dict:
    """The values of a JSON argument file (`source`: one run) with `{seed}` and `{learning_rate}` in their
    strings made the run's own values, as on the command line."""
    def filled(value, mark, given):
        if isinstance(value, list):
            return [filled(item, mark, given) for item in value]
        return value.replace(mark, given) if isinstance(value, str) else value
    for flag in PACKED_FLAGS:
        name = flag[2:]
        if name in values:
            values = {key: filled(value, placeholder(flag), str(values[name])) for key, value in values.items()}
        elif any(placeholder(flag) in str(value) for value in values.values()):
            raise UserError(f"{source}: {placeholder(flag)} is used but {name} is not given")
    return values
