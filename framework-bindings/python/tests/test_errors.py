"""One caller mistake, one exception class: hora.torch, hora.tensorflow and the raw native module
raise the same hora exception for it (InvalidArgumentError, also a ValueError and a TypeError),
and a wait that passes its timeout raises WaitTimeoutError (also a TimeoutError)."""

import pytest
import torch

import hora
import hora.torch as hvd
from hora import _core
from hora.common import vocabulary
from hora.common.vocabulary import ALLREDUCE, ALLTOALL, BROADCAST, DTYPES

try:
    import tensorflow as tf

    import hora.tensorflow as htf
except ImportError:  # the torch and raw faces are still compared
    tf = htf = None


def raw(name, kind=ALLREDUCE, tensor=None, **kw):
    """_core.enqueue on a float32 torch tensor, waited on; keywords override the arguments."""
    t = torch.ones(4) if tensor is None else tensor
    args = dict(kind=kind, name=f"raw.{name}", dtype=DTYPES["f32"], shape=list(t.shape), owner=t,
                ptr=t.data_ptr(), nbytes=t.numel() * t.element_size())
    args.update(kw)
    return _core.enqueue(**args).wait()


def in_flight_twice(submit, wait, name):
    """Submits ``name`` twice while the first is surely in flight, returns the error of the second.

    Rank by rank, so that each rank's first submission waits on the others: they submit theirs only
    after a gate allreduce that this rank enters once it has tried the duplicate.
    """
    error = None
    for k in range(hvd.size()):
        tensor = f"{name}.{k}"
        if hvd.rank() == k:
            first = submit(tensor)
            try:
                wait(submit(tensor))
            except hora.HoraError as e:
                error = e
            hvd.allreduce(torch.ones(1), name=f"{tensor}.gate")
        else:
            hvd.allreduce(torch.ones(1), name=f"{tensor}.gate")
            first = submit(tensor)
        wait(first)
    return error


def raw_duplicate():
    t = torch.ones(4)

    def submit(name):
        return _core.enqueue(kind=ALLREDUCE, name=name, dtype=DTYPES["f32"], shape=[4], owner=t,
                             ptr=t.data_ptr(), nbytes=16, op=vocabulary.Sum)

    error = in_flight_twice(submit, lambda h: h.wait(), "errors.raw.dup")
    if error is not None:
        raise error


def torch_duplicate():
    def submit(name):
        return hvd.allreduce_async(torch.ones(2), name=name, op=hvd.Sum)

    error = in_flight_twice(submit, hvd.synchronize, "errors.torch.dup")
    if error is not None:
        raise error


def n():
    return hvd.size()


# mistake -> {face: a call making it}. A face missing from an entry cannot express the mistake:
# TensorFlow has no asynchronous form (so no duplicate in flight), only the raw module takes a
# byte count, and the raw module's argument types are checked by Python itself.
MISTAKES = {
    "unsupported dtype": {
        "torch": lambda: hvd.allreduce(torch.ones(2, dtype=torch.complex64)),
        "tf": lambda: htf.allreduce(tf.ones([2], tf.complex64)),
        # raised while tracing: autograph re-raises it, and must keep the class
        "tf.function": lambda: tf.function(lambda x: htf.allreduce(x))(tf.ones([2], tf.complex64)),
        "raw": lambda: raw("dtype", dtype=99),
    },
    "not a tensor": {
        "torch": lambda: hvd.allreduce([1.0, 2.0]),
    },
    "root out of range": {
        "torch": lambda: hvd.broadcast(torch.ones(2), root_rank=n() + 3),
        "tf": lambda: htf.broadcast(tf.ones([2]), root_rank=n() + 3),
        "raw": lambda: raw("root", kind=BROADCAST, root=n() + 3),
    },
    "negative root": {
        "torch": lambda: hvd.broadcast(torch.ones(2), root_rank=-1),
        "tf": lambda: htf.broadcast(tf.ones([2]), root_rank=-1),
        "raw": lambda: raw("negroot", kind=BROADCAST, root=-1),
    },
    "root not an int": {
        "torch": lambda: hvd.broadcast(torch.ones(2), root_rank="0"),
        "tf": lambda: htf.broadcast(tf.ones([2]), root_rank="0"),
        "tf.function": lambda: tf.function(lambda x: htf.broadcast(x, root_rank="0"))(tf.ones([2])),
    },
    "splits of the wrong length": {
        "torch": lambda: hvd.alltoall(torch.ones(4), splits=[1] * (n() + 1)),
        "tf": lambda: htf.alltoall(tf.ones([4]), splits=[1] * (n() + 1)),
        "raw": lambda: raw("splits", kind=ALLTOALL, splits=[1] * (n() + 1)),
    },
    "negative splits": {
        "torch": lambda: hvd.alltoall(torch.ones(4), splits=[-1] + [5] + [0] * (n() - 2)),
        "tf": lambda: htf.alltoall(tf.ones([4]), splits=[-1] + [5] + [0] * (n() - 2)),
        "raw": lambda: raw("negsplits", kind=ALLTOALL, splits=[-1] + [5] + [0] * (n() - 2)),
    },
    "splits not summing to dim 0": {
        "torch": lambda: hvd.alltoall(torch.ones(4), splits=[3] + [0] * (n() - 1)),
        "tf": lambda: htf.alltoall(tf.ones([4]), splits=[3] + [0] * (n() - 1)),
        "raw": lambda: raw("sumsplits", kind=ALLTOALL, splits=[3] + [0] * (n() - 1)),
    },
    "bool averaged": {
        "torch": lambda: hvd.allreduce(torch.ones(2, dtype=torch.bool)),
        "tf": lambda: htf.allreduce(tf.ones([2], tf.bool)),
        "raw": lambda: raw("boolavg", tensor=torch.ones(4, dtype=torch.bool), dtype=DTYPES["bool"],
                           op=vocabulary.Average),
    },
    "wrong buffer size": {
        "raw": lambda: raw("nbytes", nbytes=12),
    },
    "unknown op": {
        "torch": lambda: hvd.allreduce(torch.ones(2), op=99),
        "tf": lambda: htf.allreduce(tf.ones([2]), op=99),
        "raw": lambda: raw("op", op=99),
    },
    "Adasum of an integer tensor": {
        "torch": lambda: hvd.allreduce(torch.ones(2, dtype=torch.int32), op=hvd.Adasum),
        "tf": lambda: htf.allreduce(tf.ones([2], tf.int32), op=htf.Adasum),
        "raw": lambda: raw("adasum", tensor=torch.ones(2, dtype=torch.int32), op=vocabulary.Adasum,
                           dtype=DTYPES["i32"]),
    },
    "op and average both given": {
        "torch": lambda: hvd.allreduce(torch.ones(2), average=True, op=hvd.Sum),
        "tf": lambda: htf.allreduce(tf.ones([2]), average=True, op=htf.Sum),
    },
    "op not allowed for the collective": {
        "tf": lambda: htf.allreduce(tf.IndexedSlices(tf.ones([1, 2]), tf.constant([0]), tf.constant([3, 2])),
                                    op=htf.Min),
    },
    "unknown handle": {
        "torch": lambda: hvd.synchronize(10**9),
    },
    "duplicate name in flight": {
        "torch": torch_duplicate,
        "raw": raw_duplicate,
    },
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_raises_the_same_class_from_every_face(mistake):
    raised = {}
    for face, call in MISTAKES[mistake].items():
        if face.startswith("tf") and tf is None:
            continue
        with pytest.raises(Exception) as info:
            call()
        raised[face] = info.value
    classes = {face: type(e).__name__ for face, e in raised.items()}
    assert set(classes.values()) == {"InvalidArgumentError"}, classes
    for face, e in raised.items():
        assert isinstance(e, hora.HoraError) and isinstance(e, ValueError) and isinstance(e, TypeError)
        # autograph re-creates the exception from its text, without the attributes
        assert face == "tf.function" or (e.cause is not None and e.rank in (hvd.rank(), None))
    # nothing half-submitted is left behind: the ranks are still in step
    assert hvd.allreduce(torch.ones(2), op=hvd.Sum).tolist() == [n()] * 2


@pytest.mark.parametrize("call, value", [
    (lambda: hvd.broadcast(torch.ones(2), root_rank=hvd.size() + 3, name="chk.root"), "root {n3}"),
    (lambda: hvd.alltoall(torch.ones(4), splits=[1] * (hvd.size() + 1), name="chk.len"), "[{ones}]"),
    (lambda: hvd.alltoall(torch.ones(4), splits=[3] + [0] * (hvd.size() - 1), name="chk.sum"), "[3, {zeros}]"),
], ids=["root", "splits length", "splits sum"])
def test_bad_root_and_splits_are_refused_on_the_calling_rank_naming_tensor_and_value(call, value):
    n = hvd.size()
    # only rank 0 errs: were anything sent, the others would never answer it
    if hvd.rank() == 0:
        with pytest.raises(ValueError) as info:
            call()
        e = info.value
        assert isinstance(e, hora.InvalidArgumentError) and e.rank == 0
        assert e.tensor_name and e.tensor_name.split(".", 1)[1].startswith("chk.")
        assert e.tensor_name in str(e)
        shown = value.format(n3=n + 3, ones=", ".join(["1"] * (n + 1)), zeros=", ".join(["0"] * (n - 1)))
        assert shown in str(e), str(e)
    # refused before anything was sent: the next collective pairs up as usual
    assert hvd.allreduce(torch.ones(1), op=hvd.Sum, name="chk.after").item() == n


def test_a_duplicate_name_in_flight_raises_horovods_error_not_a_queued_op():
    with pytest.raises(hora.InvalidArgumentError) as info:
        torch_duplicate()
    e = info.value
    assert isinstance(e, ValueError) and e.rank == hvd.rank()
    assert e.tensor_name == f"allreduce.errors.torch.dup.{hvd.rank()}"
    assert "requested allreduce of a tensor with the same name as another tensor" in str(e), str(e)
    # the first submission ran, once: the ranks are still in step
    assert hvd.allreduce(torch.ones(1), op=hvd.Sum, name="dup.after").item() == hvd.size()


def test_engine_errors_name_the_tensor():
    with pytest.raises(hora.InvalidArgumentError) as info:
        raw("named", dtype=99)
    assert info.value.tensor_name == "raw.named" and info.value.rank == hvd.rank()
    assert "unknown dtype code 99" in str(info.value)


def test_wait_timeout_raises_a_timeout_error_and_keeps_the_handle():
    # Rank 0's tensor cannot complete before the others submit theirs, which they do only after
    # a gate that rank 0 enters once its wait has timed out.
    t = torch.full((3,), 1.0)

    def submit():
        return _core.enqueue(kind=ALLREDUCE, name="errors.late", dtype=DTYPES["f32"], shape=[3], owner=t,
                             ptr=t.data_ptr(), nbytes=12, op=vocabulary.Sum)

    if hvd.rank() == 0:
        h = submit()
        with pytest.raises(hora.WaitTimeoutError) as info:
            h.wait(timeout=0.05)
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, hora.HoraError)
        assert info.value.tensor_name == "errors.late" and "timed out" in str(info.value)
        hvd.allreduce(torch.ones(1), name="errors.late.gate")
    else:
        hvd.allreduce(torch.ones(1), name="errors.late.gate")
        h = submit()
    h.wait(timeout=60)  # the same handle, still valid
    assert t.tolist() == [float(n())] * 3
    with pytest.raises(hora.InvalidArgumentError, match="timeout"):
        h.wait(timeout=-1.0)


def test_one_vocabulary():
    # Horovod's numbering, from the Rust enums.
    assert _core.OPS == {"average": 0, "sum": 1, "min": 3, "max": 4, "product": 5, "adasum": 2}
    assert (hvd.Average, hvd.Sum, hvd.Adasum, hvd.Min, hvd.Max, hvd.Product) == (0, 1, 2, 3, 4, 5)
    assert list(_core.DTYPES) == ["u8", "i8", "i32", "i64", "f16", "bf16", "f32", "f64", "i16", "u16", "bool"]
    assert list(_core.DTYPES.values()) == list(range(11))
    assert list(_core.KINDS) == ["allreduce", "allgather", "broadcast", "alltoall", "reducescatter", "barrier",
                                 "join"]
    assert hvd.ReduceOp is vocabulary.ReduceOp
    if htf is not None:
        assert htf.ReduceOp is vocabulary.ReduceOp and htf.Sum is hvd.Sum


def test_exception_classes_are_exported_by_every_face():
    modules = [hora, hvd]
    if htf is not None:
        import hora.keras as hk

        modules += [htf, hk]
    for m in modules:
        assert m.WaitTimeoutError is _core.WaitTimeoutError, m
        assert m.InvalidArgumentError is _core.InvalidArgumentError, m
    assert all(issubclass(hora.InvalidArgumentError, c) for c in (ValueError, TypeError, hora.HoraError))
    assert issubclass(hora.WaitTimeoutError, TimeoutError) and issubclass(hora.WaitTimeoutError, hora.HoraError)
    e = hora.InvalidArgumentError("raised by hand")
    assert (e.rank, e.tensor_name, e.cause) == (None, None, None)


def test_every_hora_error_is_a_runtime_error_as_in_horovod():
    for cls in (hora.HoraError, hora.MismatchError, hora.PeerFailedError, hora.ShutDownError,
                hora.InternalError, hora.InvalidArgumentError, hora.WaitTimeoutError,
                hora.NotInitializedError, hora.RendezvousError, hora.ConfigError):
        assert issubclass(cls, RuntimeError), cls
    assert issubclass(hora.NotInitializedError, ValueError)
    assert hvd.HorovodInternalError is hora.HoraError
    r, n = hvd.rank(), hvd.size()
    if n > 1:
        with pytest.raises(RuntimeError) as info:
            hvd.allreduce(torch.ones(2 + r), name="runtime_error_mismatch")
        assert isinstance(info.value, hora.MismatchError) and info.value.tensor_name
