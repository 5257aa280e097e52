"""join(): once a rank has joined, an allgather, a broadcast or a reducescatter (which would need
its rows or run without a member) is refused on every rank that submits it, as Horovod refuses them; allreduce
goes on with the joined rank's neutral input, and everything works again once all have joined."""

import os

import pytest
import torch

import hora
import hora.torch as hvd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:
    import tensorflow as tf

    import hora.tensorflow as htf
except ImportError:
    tf = htf = None


def refused(call):
    with pytest.raises(hora.HoraError) as info:
        call()
    assert "rank 0 joined" in str(info.value), str(info.value)
    return info.value


def test_torch_allgather_and_broadcast_are_refused_while_a_rank_is_joined():
    r, n = hvd.rank(), hvd.size()
    hvd.barrier()
    if r == 0:
        assert hvd.join() in range(1, n)
    else:
        e = refused(lambda: hvd.allgather(torch.ones(r, 2), name="join.t.ag"))
        assert e.tensor_name == "allgather.join.t.ag"
        # the root has not joined, but Horovod refuses a broadcast while any rank is joined
        refused(lambda: hvd.broadcast(torch.ones(3), root_rank=1, name="join.t.bc"))
        # and a reducescatter: the joined rank's share would have nowhere to go
        refused(lambda: hvd.reducescatter(torch.ones(2 * n), op=hvd.Sum, name="join.t.rs"))
        # allreduce still runs, rank 0 contributing zeros
        out = hvd.allreduce(torch.ones(2), op=hvd.Sum, name="join.t.ar")
        assert out.tolist() == [n - 1.0] * 2
        hvd.join()
    # everyone has joined: gathers and broadcasts run again
    assert hvd.allgather(torch.full((1,), float(r)), name="join.t.after").tolist() == [float(k) for k in range(n)]
    assert hvd.broadcast(torch.full((1,), float(r)), root_rank=0, name="join.t.bcafter").tolist() == [0.0]


@pytest.mark.skipif(tf is None, reason="TensorFlow is not installed")
def test_tf_allgather_and_broadcast_are_refused_while_a_rank_is_joined():
    r, n = hvd.rank(), hvd.size()
    hvd.barrier()
    if r == 0:
        htf.join()
    else:
        refused(lambda: htf.allgather(tf.ones([r, 2]), name="join.tf.ag"))
        refused(lambda: htf.broadcast(tf.ones([3]), root_rank=n - 1, name="join.tf.bc"))
        htf.join()
    out = htf.allgather(tf.fill([1], float(r)), name="join.tf.after")
    assert out.numpy().tolist() == [float(k) for k in range(n)]
