"""The exceptions camlens raises for mistakes a user can fix.

Every error derives from :class:`CamlensError`, so ``except CamlensError``
catches all of them; each also derives from the built-in exception a caller
would naturally expect (``KeyError``, ``ValueError``, ...).
"""

from __future__ import annotations

__all__ = [
    "CamlensError",
    "ChannelError",
    "DataError",
    "FolderBusyError",
    "InputError",
    "LayerNotFoundError",
    "LayerNotUsedError",
    "LayerShapeError",
    "MethodNotFoundError",
    "TargetError",
]


class CamlensError(Exception):
    """Base class of every error camlens raises on purpose."""


class LayerNotFoundError(CamlensError, LookupError):
    """A requested layer is not a submodule of the model."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


class MethodNotFoundError(CamlensError, KeyError):
    """A method name is not in the registry (:data:`camlens.METHODS`)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class LayerNotUsedError(CamlensError, RuntimeError):
    """A layer was not called in the forward pass, or the target does not depend on it."""


class LayerShapeError(CamlensError, ValueError):
    """A layer's output cannot be read as (N, C, *spatial) feature maps."""


class TargetError(CamlensError, ValueError):
    """A target (class index, top-k, callable) does not fit the model's output."""


class InputError(CamlensError, ValueError):
    """The input tensor cannot be explained as given (device, inference mode, rank)."""


class ChannelError(InputError):
    """The images have another number of channels than the model's first convolution takes (grayscale into RGB).

    ``given`` and ``expected`` are the two channel counts and ``where`` the convolution (``"ResNet's first
    convolution 'conv1'"``), so that a caller can say the fix in its own terms: the message gives the tensor's
    (``x.expand(...)``), the command line its ``--channels`` flag.
    """

    def __init__(self, message: str, given: int, expected: int, where: str) -> None:
        super().__init__(message, given, expected, where)
        self.given, self.expected, self.where = given, expected, where

    def __str__(self) -> str:  # the message alone, not the tuple of arguments
        return str(self.args[0])


class DataError(CamlensError, ValueError):
    """A data file or download is missing, truncated, corrupt or of the wrong kind."""


class FolderBusyError(CamlensError, RuntimeError):
    """Another live process is writing the same output folder (it holds the folder's lock)."""
