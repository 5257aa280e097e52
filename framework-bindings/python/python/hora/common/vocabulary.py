"""The codes hora._core understands, named once for every framework module.

The numbers come from the native module (``_core.DTYPES``, ``_core.OPS``, ``_core.KINDS``, which
read them from the Rust enums); this module gives them Python names. A framework module keeps only
its own map from framework dtypes to the hora dtype names below.
"""

import enum

from hora import _core
from hora.common.errors import invalid_argument

# {hora dtype name: code}, e.g. "f32" -> 6. The names are hora's: u8 i8 i16 u16 i32 i64 f16 bf16 f32
# f64 bool.
DTYPES = dict(_core.DTYPES)

ALLREDUCE = _core.KINDS["allreduce"]
ALLGATHER = _core.KINDS["allgather"]
BROADCAST = _core.KINDS["broadcast"]
ALLTOALL = _core.KINDS["alltoall"]
REDUCESCATTER = _core.KINDS["reducescatter"]
BARRIER = _core.KINDS["barrier"]


class ReduceOp(enum.IntEnum):
    """How allreduce and reducescatter combine values: Horovod's numbering (``hvd.Sum == 1``),
    which is also hora._core's."""

    AVERAGE = _core.OPS["average"]
    SUM = _core.OPS["sum"]
    # Adasum: float tensors, allreduce only (the engine refuses the rest, naming the tensor).
    ADASUM = _core.OPS["adasum"]
    MIN = _core.OPS["min"]
    MAX = _core.OPS["max"]
    PRODUCT = _core.OPS["product"]


Average = ReduceOp.AVERAGE
Sum = ReduceOp.SUM
Adasum = ReduceOp.ADASUM
Min = ReduceOp.MIN
Max = ReduceOp.MAX
Product = ReduceOp.PRODUCT


def reduce_op(average, op, face):
    """The ReduceOp for a call's ``op`` (or Horovod's deprecated ``average``); ``face`` (e.g.
    "hora.torch") prefixes the error. Default: Average."""
    if average is not None and op is not None:
        raise invalid_argument(f"{face}: give either op or the deprecated average, not both")
    if op is None:
        return Average if average is None or average else Sum
    try:
        op = ReduceOp(op)
    except ValueError:
        raise invalid_argument(f"{face}: unknown reduce op {op!r}") from None
    return op
