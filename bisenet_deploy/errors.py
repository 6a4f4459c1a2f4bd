"""User-facing errors: one clear line (what, where, how to fix), no deep traceback.

Library code raises these for problems the user can fix (bad paths, wrong files, bad
options). The CLI prints ``error: <message>`` and exits non-zero; everything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what and how to fix it."""

    exit_code = 2


class CheckpointError(UserError):
    """The checkpoint file cannot be read or does not hold a supported model."""


class ExportError(UserError):
    """Export or verification failed."""

    exit_code = 3


class ArtifactError(UserError):
    """An ONNX model or engine file is missing, corrupt, or does not fit this machine."""


class InputError(UserError):
    """A frame, image or data source the runtime cannot use."""


class ClosedError(UserError):
    """A Segmenter or backend was used after ``close()``."""
