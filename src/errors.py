"""The one error type for bad user input: run.py and the tools print it as one line and exit 2."""
import functools
import sys


class UserError(ValueError):
    """Input the user can fix: an unknown task, a bad template or mapping, a missing file."""


def cli(main):
    """Decorator for command-line mains: a UserError becomes `error: ...` on stderr and status 2."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    return wrapper
