"""Horovod's process-level names: what the build has, the host layout, the dynamic timeline."""

import os

import pytest

import hora
import hora.torch as hvd


def test_built_flags_say_what_this_build_has():
    assert hvd.gloo_built() is True  # hora's TCP controller plays Gloo's role
    names = dict(hora._core.backends())
    assert hvd.mpi_built() == names["mpi"]
    for flag in (hvd.nccl_built, hvd.ccl_built, hvd.cuda_built, hvd.rocm_built, hvd.ddl_built):
        assert flag() is False, flag.__name__
    on_mpi = hora._core.transport_name() == "mpi"
    assert hvd.mpi_enabled() == on_mpi and hvd.gloo_enabled() == (not on_mpi)


def test_is_homogeneous_on_one_host():
    # make test runs every rank on this host.
    assert hvd.is_homogeneous() is True


def test_start_timeline_needs_the_variable_set_at_start():
    if os.environ.get("HOROVOD_TIMELINE"):
        pytest.skip("HOROVOD_TIMELINE is set for this job")
    with pytest.raises(hvd.InvalidArgumentError, match="HOROVOD_TIMELINE"):
        hvd.start_timeline("/tmp/never.json")
    hvd.stop_timeline()  # stopping a timeline that never started is fine, as in Horovod
