"""The two exception types the CLI maps to exit codes.

Library code raises `UserError` for anything a user can cause (bad file, unknown name, bad option) and
`RunFailed` when a run itself goes wrong (e.g. the loss becomes NaN). The CLI turns them into one line on
stderr and exit codes 2 and 3; everything else is a bug and keeps its traceback.
"""


class EncoderCleanError(Exception):
    exit_code = 1


class UserError(EncoderCleanError):
    """Bad usage or bad input: missing/corrupt file, unknown name, mismatched weights, unreadable data."""

    exit_code = 2


class RunFailed(EncoderCleanError):
    """A run that started correctly failed (e.g. a non-finite loss)."""

    exit_code = 3


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an exception's message (at most `limit` characters), or its type's name:
    the one line a UserError quotes from a library's error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(error).__name__
