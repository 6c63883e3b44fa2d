"""Typed errors of the model package, each with a message a user can act on.

Errors that reject a bad value also derive from `ValueError`, so callers that already catch
`ValueError` (the CLI) report them as one line.
"""

from __future__ import annotations


class MedVLMError(Exception):
    """Base class of every error raised on purpose by `medvlm`."""


class ConfigError(MedVLMError, ValueError):
    """A model config value is invalid; the message names the field to change."""


class ImageTokenMismatchError(MedVLMError, ValueError):
    """The number of `<image>` tokens in a prompt differs from the number of image features."""


class CheckpointError(MedVLMError, ValueError):
    """A checkpoint directory cannot be used (missing files, unknown layout)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint directory holds pickle-based weight files, which are refused (code execution risk)."""


class CheckpointIntegrityError(CheckpointError):
    """A checkpoint file's sha256 differs from its manifest: the checkpoint was modified or corrupted."""
