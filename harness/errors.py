"""The one exception type the CLI turns into a one-line error and exit status 2."""


class HarnessError(Exception):
    """Bad input or an unusable environment; the message is shown to the user as is."""


class NonFiniteLossError(HarnessError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""
