"""A node process for the DDS benchmarks: isolated domain, log file, stop, memory."""

from __future__ import annotations

import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
from typing import List


def isolate_dds() -> None:
    """Put this process (and the nodes it starts) on a random DDS domain, loopback only."""
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(101, 200))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


class BenchNode:
    """``dmn_localization_node`` with ``args`` in its own process group."""

    def __init__(self, args: List[str]) -> None:
        script = Path(sys.executable).parent / 'dmn_localization_node'
        self.log = tempfile.NamedTemporaryFile('w', suffix='-dmn-node.log', delete=False)
        self.proc = subprocess.Popen([str(script), '--ros-args', *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def rss_mib(self) -> float:
        """Resident memory of the node process in MiB (Linux ``/proc``)."""
        for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError('no VmRSS in /proc status')

    def stop(self) -> None:
        """Ctrl-C the node, kill it when it does not exit within 15 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
