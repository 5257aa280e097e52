"""Tests run under ``horovodrun -np N python -m pytest``: every rank runs the same tests in the
same order, so each collective has its partners. Run alone, they skip."""

import os
import pathlib
import tempfile

import pytest

torch = pytest.importorskip("torch")

# TensorFlow (test_tensorflow.py) loads its LLVM with RTLD_GLOBAL; triton, which torch imports
# lazily (torch.optim does), then aborts the process registering the same LLVM options twice.
# Loaded before TensorFlow, triton keeps its own copy and both work.
try:
    import triton  # noqa: F401
except ImportError:
    pass

if "HOROVOD_RANK" not in os.environ:
    pytest.skip("run under horovodrun (make test does)", allow_module_level=True)

import hora.torch as hvd  # noqa: E402


@pytest.fixture
def tmp_path():
    """A fresh directory for one test on one rank. pytest's own numbers its directories under one
    base shared by every process of the user, and the ranks, running at once, race on it: one
    rank's clean-up of old directories removes what another is scanning."""
    with tempfile.TemporaryDirectory(prefix=f"hora-test-r{os.environ['HOROVOD_RANK']}-") as d:
        yield pathlib.Path(d)


@pytest.fixture(scope="session", autouse=True)
def hora_session():
    hvd.init()
    yield
    hvd.barrier()


DTYPES = [torch.uint8, torch.int8, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
          torch.float64]

