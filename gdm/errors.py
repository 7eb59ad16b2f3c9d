"""User-facing errors: one sentence naming the file, key or value at fault and what to do."""

import math


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
                   optional: bool = False, maximum: int | None = None) -> int | None:
    """The config value `value` of `key` as an int.

    Hydra reads `key=3` as an int, `key=abc` as a string, `key=2.5` as a float and `key=true` as a bool: all but the
    first raise GdmError naming `key=value` (never a silent int(2.5) == 2 or int(True) == 1), as does an int under
    `minimum` or over `maximum`. `hint` ends the sentence (what the value means, what to set instead). `optional`: null is a value
    too (the feature off, the default kept), returned as None.
    """
    if optional and value is None:
        return None
    bound = " and".join(b for b in (f" >= {minimum}" if minimum is not None else "",
                                     f" <= {maximum}" if maximum is not None else "") if b)
    hint = " ".join(filter(None, [hint, "or null" if optional else ""]))
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        raise GdmError(f"{key}={shown(value)} must be an integer{bound}{' ' + hint if hint else ''}.")
    return value


def shown(value: object) -> str:
    """A value in a message as the user typed it: strings quoted, null / true / false spelled so."""
    return f"'{value}'" if isinstance(value, str) else typed(value)


def number_option(key: str, value: object, minimum: float | None = None, maximum: float | None = None,
                  above: float | None = None, below: float | None = None, hint: str = "",
                  optional: bool = False) -> float | None:
    """The config value `value` of `key` as a float within the bounds given (`minimum` / `maximum` inclusive,
    `above` / `below` exclusive). A string, true / false, NaN or a value outside them raises GdmError naming
    `key=value` and the range (a negative learning rate or loss weight, a decay of 1.5, never used as given).
    NaN and infinities are refused too.
    `optional`: null is a value too (the feature off), returned as None."""
    if optional and value is None:
        return None
    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
              f"<= {maximum:g}" if maximum is not None else "", f"< {below:g}" if below is not None else ""]
    bound = " and ".join(b for b in bounds if b)
    hint = " ".join(filter(None, [hint, "or null" if optional else ""]))
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or any(((minimum is not None and value < minimum), (above is not None and value <= above),
                          (maximum is not None and value > maximum), (below is not None and value >= below))):
        raise GdmError(f"{key}={shown(value)} must be a number{' ' + bound if bound else ''}"
                       f"{' ' + hint if hint else ''}.")
    return float(value)


def boolean_option(key: str, value: object) -> bool:
    """The config value `value` of `key` as a bool: true or false, never a string's truth (`flip=maybe`)."""
    if not isinstance(value, bool):
        raise GdmError(f"{key}={shown(value)} must be true or false.")
    return value
