"""The error type of the platform: a cause and a fix, shown as one line."""


class RepriseError(Exception):
    """A problem the user can fix; printed as one line with its fix, never as a stack trace."""

    def __init__(self, cause: str, fix: str = "") -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause} Fix: {fix}" if fix else cause)
