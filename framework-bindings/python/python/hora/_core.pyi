"""Type stubs of the native module hora._core (glue only; use hora / hora.torch)."""

import os
import sys
from typing import Any, final

__all__ = [
    "HoraError",
    "ConfigError",
    "NotInitializedError",
    "MismatchError",
    "PeerFailedError",
    "ShutDownError",
    "InvalidArgumentError",
    "RendezvousError",
    "WaitTimeoutError",
    "InternalError",
    "Handle",
    "Output",
    "init",
    "add_process_set",
    "start_timeline",
    "stop_timeline",
    "is_homogeneous",
    "backends",
    "transport_name",
    "remove_process_set",
    "process_sets",
    "shutdown",
    "is_initialized",
    "topology",
    "enqueue",
    "enqueue_group",
    "join",
    "DTYPES",
    "OPS",
    "KINDS",
]

# {name: code}, taken from the Rust enums' stable codes.
DTYPES: dict[str, int]
OPS: dict[str, int]
KINDS: dict[str, int]

class HoraError(RuntimeError):
    rank: int | None
    tensor_name: str | None
    cause: str | None

class ConfigError(HoraError): ...
class NotInitializedError(HoraError, ValueError): ...
class MismatchError(HoraError): ...
class PeerFailedError(HoraError): ...
class ShutDownError(HoraError): ...
class InvalidArgumentError(HoraError, ValueError, TypeError): ...
class RendezvousError(HoraError): ...
class WaitTimeoutError(HoraError, TimeoutError): ...
class InternalError(HoraError): ...

@final
class Output:
    """Engine-allocated result bytes; supports the (writable) buffer protocol."""

    def __len__(self) -> int: ...
    # Python exposes the C buffer slot as __buffer__ from 3.12 on (PEP 688).
    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int, /) -> memoryview: ...

@final
class Handle:
    @property
    def name(self) -> str: ...
    def poll(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> tuple[Output | None, list[int], list[int]] | None: ...

def init(*, process_sets: list[list[int]] = ...) -> None: ...
def shutdown() -> None: ...
def is_initialized() -> bool: ...
def topology() -> tuple[int, int, int, int, int, int]: ...
def enqueue(
    *,
    kind: int,
    name: str,
    dtype: int,
    shape: list[int],
    owner: Any | None = None,
    ptr: int = 0,
    nbytes: int = 0,
    op: int = ...,
    root: int = 0,
    prescale: float = 1.0,
    postscale: float = 1.0,
    splits: list[int] = ...,
    process_set: int = 0,
) -> Handle: ...
def enqueue_group(
    *,
    kind: int,
    members: list[tuple[str, int, list[int], Any, int, int]],
    op: int = ...,
    prescale: float = 1.0,
    postscale: float = 1.0,
    process_set: int = 0,
) -> list[Handle]: ...
def join() -> int: ...
def add_process_set(ranks: list[int]) -> tuple[int, list[int]]: ...
def remove_process_set(id: int) -> None: ...
def process_sets() -> list[tuple[int, list[int]]]: ...
def start_timeline(path: str | os.PathLike[str], mark_cycles: bool = False) -> None: ...
def stop_timeline() -> None: ...
def is_homogeneous() -> bool: ...
def backends() -> list[tuple[str, bool]]: ...
def transport_name() -> str: ...
