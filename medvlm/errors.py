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


class UnsupportedFamilyError(CheckpointError):
    """A checkpoint's `model_type` is not on the allow-list; the message lists the supported families."""


class WeightsMismatchError(CheckpointError):
    """A checkpoint's weights do not match its architecture (missing, unexpected or mis-shaped tensors)."""


class RemoteCodeError(CheckpointError):
    """A checkpoint needs `trust_remote_code` (its config has an `auto_map`) and the caller did not allow it."""


class RemoteCodeChangedError(RemoteCodeError):
    """A trusted checkpoint's remote code files differ from the hashes recorded on an earlier load."""
