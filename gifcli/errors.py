"""One domain exception family; the CLI turns it into one red line and an exit code."""


class GifError(Exception):
    """A failure gif explains in one line (exit code 1)."""

    exit_code = 1


class UsageError(GifError):
    """Bad arguments: a value out of range, an unknown name (exit code 2)."""

    exit_code = 2


class InputFileError(GifError):
    """A file that is missing, unreadable, corrupted, of the wrong kind or from another run."""


class DataNotFoundError(GifError):
    """A dataset that is neither on disk nor downloadable."""


class UserCodeError(GifError):
    """A user's architecture or plug-in that cannot be imported, or raised while building."""


class NonFiniteError(GifError):
    """A NaN or infinity where gif needs finite numbers (weights, gradients, solutions, metrics)."""


class GateFailed(GifError):
    """A CI gate (a threshold of ``gif evaluate``) that the model does not pass (exit code 1)."""


class ChainBroken(GifError):
    """A link of an edit's recorded chain does not hold (``gif verify``; exit code 1)."""
