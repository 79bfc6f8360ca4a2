"""The one error type a component raises for a problem the user can fix."""


class StepError(Exception):
    """A failure with a cause and a fix, shown to the user as one line, without a stack trace."""

    def __init__(self, cause: str, fix: str = "") -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause} Fix: {fix}" if fix else cause)
