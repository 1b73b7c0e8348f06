"""The one error type for bad user input: run.py and the tools print it as one line and exit 2."""
import functools
import sys

# The shell's status for a process stopped by SIGINT (128 + 2).
INTERRUPTED = 130


class UserError(ValueError):
    """Input the user can fix: an unknown task, a bad template or mapping, a missing file."""


def first_line(error: BaseException) -> str:
    """An exception's message as one line (its first; its type's name where it has none)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def cli(main):
    """Decorator for command-line mains: a UserError becomes `error: ...` on stderr and status 2;
    Ctrl-C one line and status 130 (a run stopped before its end logs and saves nothing)."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted (Ctrl-C); nothing unfinished was logged or saved", file=sys.stderr)
            return INTERRUPTED
    return wrapper
