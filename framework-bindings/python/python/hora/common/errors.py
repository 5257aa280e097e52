"""Raising hora's exceptions from the Python layer the way the native module does."""

from hora._core import InvalidArgumentError
from hora.common import basics


def invalid_argument(message, tensor_name=None):
    """The InvalidArgumentError for a caller's mistake found before anything reaches the engine:
    the class the engine raises for its own checks, with the same attributes."""
    e = InvalidArgumentError(message)
    e.rank = basics._topology[0] if basics._topology is not None else None
    e.tensor_name = tensor_name
    e.cause = message
    return e
