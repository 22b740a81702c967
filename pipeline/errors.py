"""The errors a user can act on: each message names the file or value at fault and the fix.

`python -m pipeline` prints them as one line and exits 1; any other exception is a bug and keeps its traceback.
"""


class PipelineError(ValueError):
    """Bad input to a stage; the message names the file or value and the fix."""


class ConfigError(PipelineError):
    """A value in params.yaml that cannot be used; the message names the key and the fix."""


class MissingInputError(PipelineError, FileNotFoundError):
    """An input file or folder a stage needs is absent; the message says which stage writes it."""
