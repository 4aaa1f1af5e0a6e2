"""A real single-node SLURM for the tests: slurm-wlm's daemons started by hand (no systemd here). Spool, state and
logs live in a temporary folder. The configuration has to be /etc/slurm/slurm.conf, the one place the commands
inside a batch job look for it (SLURM does not pass SLURM_CONF on to them), so a machine that has a slurm.conf
of its own is left alone and the test is skipped there; ours is marked and removed afterwards. munged's socket
is in its system place (/run/munge); a munged already running is reused."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CONFIG = Path("/etc/slurm/slurm.conf")
MARK = "# prunescope test cluster: written and removed by tests/slurm_cluster.py\n"
PARTITIONS = ("cpu", "gpu")  # the partition names profiles/slurm uses; both on the one node (which has no GPU)
SERVICES = ("munged", "slurmctld", "slurmd")


def unavailable() -> str | None:
    """Why no test cluster can be started here, or None."""
    if os.geteuid() != 0:
        return "the SLURM daemons need root"
    if CONFIG.exists() and not CONFIG.read_text().startswith(MARK):
        return f"{CONFIG} exists: this machine has a SLURM of its own, which the test leaves alone"
    if all(shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists() for tool in SERVICES + ("sbatch",)):
        return None
    if shutil.which("apt-get") is None:
        return "slurm-wlm is not installed and there is no apt-get to install it (apt-get install -y slurm-wlm)"
    return None


def install() -> None:
    """slurm-wlm from apt (what .ci/run does first; here for a developer's own machine)."""
    if not Path("/usr/sbin/slurmctld").exists():
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm"], check=True,
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)


def node_resources() -> tuple[int, int]:
    """CPUs and memory (MB) the node offers: every core, and 80% of the machine's memory."""
    total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:"))
    return os.cpu_count() or 1, int(total_kb / 1024 * 0.8)


def write_config(folder: Path, spool: Path) -> None:
    cpus, memory = node_resources()
    for sub in ("state", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    partitions = "\n".join(f"PartitionName={name} Nodes=localhost Default={'YES' if name == 'cpu' else 'NO'} "
                           f"MaxTime=INFINITE State=UP" for name in PARTITIONS)
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(MARK + f"""ClusterName=prunescope-test
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={spool}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}
SlurmdLogFile={folder / 'log' / 'slurmd.log'}
NodeName=localhost CPUs={cpus} RealMemory={memory} State=UNKNOWN
{partitions}
""")


def _start_munge() -> bool:
    """Start munged unless it runs already; whether it was started here."""
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return False
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, capture_output=True, timeout=60)
    return True


@contextlib.contextmanager
def local_slurm(folder: Path, timeout: float = 60) -> Iterator[dict[str, str]]:
    """Write the configuration, start munged (unless running), slurmctld and slurmd; yield the environment for
    sbatch, squeue and friends; stop what was started and remove the configuration."""
    install()
    # slurmd makes Unix sockets in its spool folder, whose paths may be at most 108 bytes: pytest-xdist's temporary
    # folders (/tmp/pytest-of-root/pytest-N/popen-gw0/test_.../cluster/spool/localhost_1.4294967291) are longer, and
    # slurmd then holds every job without saying why to sbatch. So the spool gets a short folder of its own.
    spool = Path(tempfile.mkdtemp(prefix="slurmd-", dir="/tmp"))
    write_config(folder, spool)
    env = dict(os.environ)
    started_munge = _start_munge()
    daemons = []
    try:
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(subprocess.Popen([f"/usr/sbin/{daemon}", "-D"], env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if state.split() and all(s.rstrip("*") == "idle" for s in state.split()):
                break
            time.sleep(1)
        else:
            logs = "\n".join(path.read_text()[-2000:] for path in (folder / "log").glob("*.log"))
            raise RuntimeError(f"the test SLURM did not come up (sinfo: {state.strip()!r}):\n{logs}")
        yield env
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=30)
        if started_munge:
            subprocess.run(["pkill", "-x", "munged"], capture_output=True)
        CONFIG.unlink(missing_ok=True)
        shutil.rmtree(spool, ignore_errors=True)
