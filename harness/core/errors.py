"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """A problem with the user's input or environment (bad flag, missing data, ...)."""

    exit_code = 1


class UnknownName(UserError):
    """An unknown method/benchmark/model name; exit code 2 like other usage errors."""

    exit_code = 2
