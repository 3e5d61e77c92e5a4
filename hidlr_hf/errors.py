"""The one exception type users see for bad input: its message says what is wrong and what to do."""


class HiDLRError(ValueError):
    """A bad input or configuration for Hi-DLR. The message names the culprit and the fix."""
