"""Shared fixtures: an isolated DDS domain and node processes that are always stopped."""

import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import time

import pytest


def _venv_bin(name):
    """Path of a console script installed beside the running interpreter."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f'{path} is missing: run `make setup` first')
    return str(path)


@pytest.fixture(scope='session')
def ros_domain():
    """Use a random ROS_DOMAIN_ID on loopback only, for this process and its children."""
    saved = {k: os.environ.get(k) for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')}
    domain = random.SystemRandom().randint(1, 100)
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    yield domain
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class NodeProcess:
    """A console script run in its own process group, its output kept in a log file."""

    def __init__(self, name, args, log_path):
        self.log_path = log_path
        self._log = open(log_path, 'w')
        self.proc = subprocess.Popen([_venv_bin(name), *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=os.environ.copy(),
                                     start_new_session=True)

    def log(self):
        """Everything the process printed so far (also after :meth:`stop`)."""
        if not self._log.closed:
            self._log.flush()
        return Path(self.log_path).read_text()

    def alive(self):
        """Return True while the process runs."""
        return self.proc.poll() is None

    def stop(self, timeout=15.0, sig=signal.SIGINT):
        """Send ``sig`` (Ctrl-C's SIGINT), then SIGKILL the whole group if it does not exit."""
        if self.alive():
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_process(ros_domain, tmp_path):
    """Start console scripts in the test's DDS domain; every one is stopped afterwards."""
    started = []

    def start(name, *args):
        process = NodeProcess(name, args, tmp_path / f'{name}-{len(started)}.log')
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def wait_until(predicate, timeout, interval=0.05):
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def call_service(executor, client, request, timeout=60.0, attempts=3):
    """Call an idempotent service, asking again if a response is lost; None after timeout."""
    from dmn_localization.ros.service_call import call_idempotent, spin_wait

    return call_idempotent(client, request, spin_wait(executor), timeout, attempts)
