"""Reading the files a user names (results log, delta_config.json, argument file): regular files only,
of bounded size. A FIFO would block the reader forever and a device such as /dev/zero never ends."""
import os
import stat
from typing import IO, Iterator, Optional

from src.errors import UserError

# Far above any real record or config (a few kilobytes); a line or file beyond it is not one of ours.
MAX_LINE_CHARS = 16 * 2**20


def open_regular(path, what: str) -> IO[str]:
    """`path` opened as UTF-8 text (undecodable bytes replaced); a UserError naming `what` when it is
    missing, unreadable or not a regular file. Opened without blocking, so a FIFO is refused, not waited on."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{what} {path!r} does not exist") from None
    except OSError as error:
        raise UserError(f"cannot read {what} {path!r}: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{what} {path!r} is not a regular file (a folder, FIFO or device)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, encoding="utf-8", errors="replace")


def read_regular(path, what: str, limit: int = MAX_LINE_CHARS) -> str:
    """The whole text of a small regular file (UserError when it is larger than `limit` characters)."""
    with open_regular(path, what) as file:
        text = file.read(limit + 1)
    if len(text) > limit:
        raise UserError(f"{what} {os.fspath(path)!r} is larger than {limit} characters: not one of ours")
    return text


def bounded_lines(file: IO[str], limit: int = MAX_LINE_CHARS) -> Iterator[Optional[str]]:
    """The lines of `file`; a line longer than `limit` characters is read in pieces and yielded as None."""
    while line := file.readline(limit):
        if len(line) == limit and not line.endswith("\n"):
            while (rest := file.readline(limit)) and not rest.endswith("\n"):
                pass
            yield None
        else:
            yield line
