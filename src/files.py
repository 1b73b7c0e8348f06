"""Reading the files a user names (results log, delta_config.json, argument file): regular files only,
of bounded size. A FIFO would block the reader forever and a device such as /dev/zero never ends.
Writing the output files a user names (a table's CSV and figures): all of them or none."""
import os
import stat
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, Optional, Tuple

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


def write_all(outputs: Dict[str, Tuple[str, Callable[[str], None]]]) -> None:
    """Write several output files, all or none. `outputs`: path -> (the option that names it, a function that
    writes the file at the path it is given). Every file is first created empty under a temporary name beside
    its path (its folder made where missing), so a path that cannot be written (a file where its folder should
    be, a read-only folder, /proc, a device) is a UserError before anything is written; then each is written,
    and only when all are written are they moved into place. On failure nothing is left behind."""
    staged, made = [], []
    try:
        for path, (option, _) in outputs.items():
            target = Path(path).absolute()
            try:
                if target.exists() and not target.is_file():
                    raise UserError(f"{option}: {path!r} is not a regular file (a folder or a device)")
                made += [folder for folder in reversed(target.parents) if not folder.exists()]
                target.parent.mkdir(parents=True, exist_ok=True)
                temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
                staged.append((temporary, target))
            except OSError as error:
                raise UserError(f"{option}: cannot write {path!r}: {error}") from None
        for (temporary, _), (path, (option, write)) in zip(staged, outputs.items()):
            try:
                write(str(temporary))
            except OSError as error:
                raise UserError(f"{option}: cannot write {path!r}: {error}") from None
        while staged:
            os.replace(*staged.pop())
        made = []
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        for folder in reversed(made):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
