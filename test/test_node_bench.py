"""The node benchmark's memory soak reads memory twice for any soak length."""

from dmn_localization.bench.node_bench import soak
import pytest


class FakeDriver:
    """Calls the tick at 30 Hz of simulated time; the node answers every other frame."""

    def __init__(self):
        self.received = {}

    def stream(self, rate_hz, seconds, on_tick=None):
        sent = {}
        for k in range(int(seconds * rate_hz)):
            sent[k] = 0.0
            if k % 2 == 0:
                self.received[k] = 0.0
            if on_tick is not None:
                on_tick(k / rate_hz)
        return sent

    def node_counts(self):
        return {'processed': len(self.received)}


class FakeNode:
    """Resident memory that grows by 1 MiB per reading."""

    def __init__(self):
        self.readings = 0

    def rss_mib(self):
        self.readings += 1
        return 100.0 + self.readings


@pytest.mark.parametrize('minutes, first_min', [(10.0, 1.0), (1.0, 0.5), (0.01, 0.005)])
def test_soak_reads_memory_early_and_at_the_end(minutes, first_min):
    node = FakeNode()
    readings = soak(minutes)(FakeDriver(), node)
    assert readings['first_reading_min'] == pytest.approx(first_min)
    assert node.readings == 2
    assert readings['first_mib'] == 101.0 and readings['at_end_mib'] == 102.0
    assert readings['growth'] == pytest.approx(102.0 / 101.0 - 1.0)
    assert readings['frames'] == int(minutes * 60 * 30)
