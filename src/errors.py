"""The one error type for bad user input: run.py and the tools print it as one line and exit 2."""


class UserError(ValueError):
    """Input the user can fix: an unknown task, a bad template or mapping, a missing file."""
