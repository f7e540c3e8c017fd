"""The one error type users see: a one-line message naming the thing and the fix."""


class CalibError(Exception):
    """A user error (bad config, missing or corrupt file, bad data row). The CLI prints it as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
