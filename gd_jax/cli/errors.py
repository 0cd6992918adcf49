"""Bad input: the one kind of failure the command line reports in one line, with exit status 2."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["BadInput", "bad_input"]


class BadInput(ValueError):
    """A mistake in what a user asked for: a setting, a data file, a run folder.

    The command line reports it as one line on stderr with exit status 2; any other
    exception is a bug and keeps its traceback.
    """


# Library errors that mean "bad input" when raised by validation or file access.
_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                 FileExistsError)


@contextlib.contextmanager
def bad_input() -> Iterator[None]:
    """Turns the validation and file errors raised inside the block into ``BadInput``.

    Wrap only calls whose ``ValueError``/``OSError`` means the user's input is at fault
    (loading data, checking arguments, reading a run's files), so that an error anywhere
    else still surfaces as a bug with its traceback.
    """
    try:
        yield
    except BadInput:
        raise
    except _INPUT_ERRORS as e:
        raise BadInput(str(e)) from e
