"""GPU slots on a several-GPU workstation: each concurrent job claims a different device, and a killed job's
claim is gone. Run on CPU: the claim is a file lock, whatever the hardware."""

import subprocess
import sys

from prunescope.runlog import claim_gpu_slot

HOLD = """import sys, time
from pathlib import Path
from prunescope.runlog import claim_gpu_slot
index, _held = claim_gpu_slot(int(sys.argv[1]), Path(sys.argv[2]))
print(index, flush=True)
time.sleep(600)
"""


def test_concurrent_jobs_get_different_gpus_and_a_killed_job_frees_its_gpu(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "2", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        index, handle = claim_gpu_slot(2, tmp_path)
        assert index == 1
        handle.close()
    finally:
        holder.kill()
        holder.wait()
    index, handle = claim_gpu_slot(2, tmp_path)  # the killed holder's lock went with its process
    assert index == 0
    handle.close()
