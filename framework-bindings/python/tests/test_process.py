"""Process-level behaviour: import without torch, Ctrl-C while waiting, fork safety."""

import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
import torch

import hora
import hora.torch as hvd


def test_hora_imports_without_torch_and_hora_torch_says_why():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import hora\n"
        "assert issubclass(hora.MismatchError, hora.HoraError)\n"
        "try:\n"
        "    import hora.torch\n"
        "except ImportError as e:\n"
        "    print('IMPORTERROR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "HORA_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "IMPORTERROR hora.torch needs PyTorch" in out.stdout


def test_init_without_launcher_explains_how_to_launch():
    code = "import hora\ntry:\n    hora.init()\nexcept hora.ConfigError as e:\n    print('CONFIG', e)\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "HORA_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "CONFIG" in out.stdout and "horovodrun" in out.stdout, out.stdout + out.stderr


def test_ctrl_c_interrupts_a_wait_and_the_handle_stays_usable():
    r, n = hvd.rank(), hvd.size()
    t = torch.ones(3)
    if r == 0:
        h = hvd.allreduce_async_(t, name="ctrlc", op=hvd.Sum)
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            hvd.synchronize(h)
        assert time.perf_counter() - start < 1.0, "Ctrl-C took too long to interrupt the wait"
        hvd.barrier()
        assert torch.equal(hvd.synchronize(h), torch.full((3,), float(n)))
    else:
        hvd.barrier()
        hvd.allreduce_(t, name="ctrlc", op=hvd.Sum)
        assert torch.equal(t, torch.full((3,), float(n)))


def test_forked_child_gets_a_clear_error():
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a threaded process; that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child: must fail fast, never touch the parent's engine
        os.close(read)
        try:
            hvd.allreduce(torch.ones(2))
            msg = b"no error"
        except hora.HoraError as e:
            msg = b"ok " + str(e).encode()
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            msg = repr(e).encode()
        os.write(write, msg)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        msg = f.read().decode()
    os.waitpid(pid, 0)
    assert msg.startswith("ok ") and "forked" in msg, msg
    # the parent is unaffected
    assert hvd.allreduce(torch.ones(1), op=hvd.Sum).item() == hvd.size()
