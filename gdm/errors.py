"""User-facing errors: one sentence naming the file, key or value at fault and what to do."""


class GdmError(ValueError):
    """A mistake the user can fix (bad config value, missing data, unusable checkpoint).

    The task entry point prints its message alone, without a stack trace, and exits non-zero.
    """


def typed(value: object) -> str:
    """A config value as the user types it on the command line: null, true / false, else str()."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def shown(value: object) -> str:
    """A value in a message as the user typed it: strings quoted, null / true / false spelled so."""
    return f"'{value}'" if isinstance(value, str) else typed(value)
