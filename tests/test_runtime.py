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
