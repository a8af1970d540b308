import subprocess
import sys


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
