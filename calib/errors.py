"""The one error type users see: a one-line message naming the thing and the fix."""


class CalibError(Exception):
    """A user error (bad config, missing or corrupt file, bad data row). The CLI prints it as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class WriteError(CalibError):
    """A file or folder calib could not write (read-only mount, full disk or quota, a file in the way)."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"cannot write {self.path}: {self.reason}")
