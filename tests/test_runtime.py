import subprocess
import sys

import pytest

from vfer import runtime


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_set_threads_leaves_torch_unimported_in_jobs_that_do_not_use_it():
    assert run("import sys; from vfer.runtime import set_threads; set_threads(1); "
               "print('torch' in sys.modules)") == "False"


def test_set_threads_limits_torch_when_the_job_uses_it():
    assert run("import torch; from vfer.runtime import set_threads; set_threads(1); "
               "print(torch.get_num_threads())") == "1"


def test_to_host_gives_a_tensors_values_as_an_array_whatever_its_layout_or_grad():
    import numpy as np
    import torch

    from vfer.runtime import to_host

    t = torch.arange(24.0, requires_grad=True).view(2, 3, 4) * 2
    got = to_host(t.permute(0, 2, 1))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (2, 4, 3)
    np.testing.assert_array_equal(got, (np.arange(24.0).reshape(2, 3, 4) * 2).transpose(0, 2, 1))


#: 20 times, as a training step: allocates and fills four 16 MB arrays, then frees them; prints
#: the page faults this took.
PAGE_FAULTS = """
import resource, sys
import numpy as np
from vfer.runtime import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
step = lambda: [np.ones(4_000_000, np.float32) for _ in range(4)]
step()  # the first step maps its pages
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_freed_memory_keeps_freed_arrays_mapped_for_the_next_ones():
    faults = {}
    for mode in ("default", "reuse"):
        faults[mode] = int(subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode],
                                          capture_output=True, text=True, check=True).stdout)
    pages = 20 * 4 * 16_000_000 // 4096
    assert faults["default"] > pages / 20  # freed memory unmapped, faulted in again
    assert faults["reuse"] < pages / 100


def test_reuse_freed_memory_changes_nothing_without_glibc_mallopt(monkeypatch):
    class NoMallopt:
        def __init__(self, name):
            pass

    monkeypatch.setattr(runtime.ctypes, "CDLL", NoMallopt)
    assert runtime.reuse_freed_memory() is False
