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


def integer_option(key: str, value: object, minimum: int | None = None, hint: str = "",
                   optional: bool = False) -> int | None:
    """The config value `value` of `key` as an int.

    Hydra reads `key=3` as an int, `key=abc` as a string, `key=2.5` as a float and `key=true` as a bool: all but the
    first raise GdmError naming `key=value` (never a silent int(2.5) == 2 or int(True) == 1), as does an int under
    `minimum`. `hint` ends the sentence (what the value means, what to set instead). `optional`: null is a value
    too (the feature off, the default kept), returned as None.
    """
    if optional and value is None:
        return None
    bound = f" >= {minimum}" if minimum is not None else ""
    hint = " ".join(filter(None, [hint, "or null" if optional else ""]))
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        shown = f"'{value}'" if isinstance(value, str) else typed(value)
        raise GdmError(f"{key}={shown} must be an integer{bound}{' ' + hint if hint else ''}.")
    return value
