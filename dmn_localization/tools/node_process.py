"""``dmn_localization_node`` as a child process, for the demo and the DDS benchmarks."""

from __future__ import annotations

import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
from typing import List, Optional


def isolate_dds() -> None:
    """Put this process (and the nodes it starts) on a random DDS domain, loopback only."""
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(101, 200))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


class NodeProcess:
    """
    ``dmn_localization_node --ros-args ARGS`` in its own process group.

    Its output goes to ``log_path`` (a temporary file when not given); :meth:`stop`
    Ctrl-Cs it and kills the group when it does not exit in time.
    """

    def __init__(self, args: List[str], log_path: Optional[Path] = None) -> None:
        script = Path(sys.executable).parent / 'dmn_localization_node'
        command = [str(script)] if script.exists() else [
            sys.executable, '-m', 'dmn_localization.ros.node']
        if log_path is None:
            self.log = tempfile.NamedTemporaryFile('w', suffix='-dmn-node.log', delete=False)
        else:
            self.log = open(log_path, 'w')
        self.proc = subprocess.Popen(command + ['--ros-args', *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def rss_mib(self) -> float:
        """Resident memory of the node process in MiB (Linux ``/proc``)."""
        for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError('no VmRSS in /proc status')

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """Ctrl-C the node, kill its group when it does not exit within ``timeout`` s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
