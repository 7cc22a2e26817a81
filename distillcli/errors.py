"""The one exception type a user can cause; the CLI prints its message as one line and exits non-zero."""

from __future__ import annotations

import signal

MAX_MESSAGE = 300  # characters of a quoted error or value in a message: a file must not print megabytes


class DistillError(Exception):
    """A mistake in the user's input (file, option, environment) or a run that cannot go on."""


def short(value: object, limit: int = MAX_MESSAGE) -> str:
    """The first line of an error (or any value's text), at most ``limit`` characters, printable only."""
    text = str(value).strip()
    if isinstance(value, BaseException) and not text:
        text = type(value).__name__
    first = text.splitlines()[0] if text else ""
    clean = "".join(c if c.isprintable() else "?" for c in first[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


class Stop:
    """The stop signal (SIGINT, SIGTERM or SIGHUP) that ended the command: its exit code is 128 + the number, as a
    shell reports a signal. Set by whichever handler caught it (the CLI's, or a run directory's)."""

    signum: int = signal.SIGINT
