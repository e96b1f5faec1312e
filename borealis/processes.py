"""Child processes of one machine's appliance: start, stop, and the command line that runs a role.

Torch-free and importing nothing above the shared layer, so both ``borealis up``'s supervisor and the
benchmarks' private appliances start their processes the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from borealis.rotating_log import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, RotatingLog, pump

log = logging.getLogger(__name__)

# One machine serves and trains (`borealis up`): the trainer yields the CPU to serving (SCHED_IDLE, its
# session at the lowest weight) and computes whenever serving leaves a core idle, with no duty cycle of
# its own: under saturating traffic it took 0.03 of a core and serving kept 0.995 of its paused speed,
# under traffic that left cores idle it took 0.6 of a core and its drafts served tau 1.21x the static
# draft's (`bench shift --trainer colocated --think-seconds 12`, docs/benchmarks.md). One thread: beside
# a worker whose threads already fill the cores, a second OpenMP pool spins at its barriers while the
# scheduler holds one of its threads back (8.4 CPU-seconds an optimizer step on two threads, 3.7 on
# one). It judges a candidate on at most 24 traces and every 20 steps (2 rounds of 10), not every 200.
COLOCATED_TRAINER_ENV = {
    "BOREALIS_TRAINER_THREADS": "1",
    "BOREALIS_TRAINER_JUDGE_MAX_TRACES": "24",
    "BOREALIS_TRAINER_STEPS_PER_ROUND": "10",
    "BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS": "2",
}


def rss_kib(pid: int | str = "self") -> int | None:
    """Resident set size of a process in KiB, from /proc (Linux); None elsewhere or when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used, its threads included, from /proc (Linux); 0.0
    where there is none or the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# This process's session's CPU weight (Linux autogroups): its nice value, readable and writable.
OWN_AUTOGROUP = Path("/proc/self/autogroup")


def idle_session_weight(proc: Path = OWN_AUTOGROUP) -> bool:
    """Give this process's session the lowest CPU weight (nice 19) where the kernel shares CPU time
    between sessions before tasks (autogroup: Linux with ``sched_autogroup_enabled``). There a
    SCHED_IDLE policy only orders the tasks of one session: a trainer in its own session (every child
    of `borealis up`) took its whole duty cycle from serving on 2 cores, 0.23 of a core, serving at
    0.79 of its speed with learning paused (docs/benchmarks.md). Only a session's leader does it, as
    another session is a shell's. True when set."""
    if os.getsid(0) != os.getpid():
        return False
    try:
        proc.write_text("19\n")
    except OSError:
        return False
    return True


def session_nice(proc: Path = OWN_AUTOGROUP) -> int | None:
    """This process's session's CPU weight as a nice value; None where the kernel has no autogroups."""
    try:
        return int(proc.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def cli_argv(*args: str) -> list[str]:
    """``borealis ARGS`` as this interpreter runs it (no reliance on PATH)."""
    return [sys.executable, "-m", "appliance.cli", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    critical: bool = True  # a critical child that keeps dying stops the appliance; others just restart

    log_max_bytes: int = DEFAULT_MAX_BYTES  # the log rotates past this size, keeping `log_backups`
    log_backups: int = DEFAULT_BACKUPS

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        pump(self.process.stdout, RotatingLog(self.log_path, self.log_max_bytes, self.log_backups))

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM; killing it", self.name)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
