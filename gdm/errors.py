"""User-facing errors: one sentence naming the file, key or value at fault and what to do."""


class GdmError(ValueError):
    """A mistake the user can fix (bad config value, missing data, unusable checkpoint).

    The task entry point prints its message alone, without a stack trace, and exits non-zero.
    """
