"""The one exception type a user can cause; the CLI prints its message as one line and exits non-zero."""


class DistillError(Exception):
    """A mistake in the user's input (file, option, environment) or a run that cannot go on."""
