"""A stop that reaches the executor as an invalid context is a clean shutdown (ros/spin.py)."""

from dmn_localization.ros.spin import RCLError, spin_until_shutdown
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy


class StoppedWhileBuilding(SingleThreadedExecutor):
    """
    An executor that loses its context as it builds its next wait set.

    This is the race rclpy's signal handler thread can win: it shuts the context down
    after the executor checked ``context.ok()`` and before ``rcl_wait_set_init``.
    """

    def __init__(self, context, shut_down=True, error=None):
        super().__init__(context=context)
        self.shut_down, self.error = shut_down, error

    def spin(self):
        if self.error is not None:
            raise self.error
        if self.shut_down:
            self.context.shutdown()
        with self.context.handle:
            _rclpy.WaitSet(0, 1, 0, 0, 0, 0, self.context.handle)
        raise AssertionError('the wait set was built: the context was not shut down')


@pytest.fixture
def context(ros_domain):
    """Return an initialized rclpy context of its own, shut down afterwards."""
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


def test_the_race_raises_rclerror_from_rclpy_itself(context):
    # the helper's premise: rclpy raises exactly this for a context that went down
    with pytest.raises(RCLError, match='context is not valid'):
        StoppedWhileBuilding(context).spin()


def test_an_invalid_context_after_shutdown_ends_the_spin_cleanly(context):
    spin_until_shutdown(StoppedWhileBuilding(context))
    assert not context.ok()


def test_rclerror_while_the_context_is_up_propagates(context):
    executor = StoppedWhileBuilding(context, error=RCLError('failed to take a message'))
    with pytest.raises(RCLError, match='failed to take a message'):
        spin_until_shutdown(executor)
    assert context.ok()


def test_other_errors_propagate(context):
    executor = StoppedWhileBuilding(context, error=ValueError('a callback failed'))
    with pytest.raises(ValueError, match='a callback failed'):
        spin_until_shutdown(executor)


def test_a_shutdown_from_another_thread_ends_a_real_spin(context):
    import threading

    node = rclpy.create_node('spin_test', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    timer = threading.Timer(0.2, context.shutdown)
    timer.start()
    try:
        spin_until_shutdown(executor)
    finally:
        timer.join()
        executor.shutdown()
        node.destroy_node()
    assert not context.ok()


@pytest.mark.ros
def test_sigterm_stops_the_node_with_status_0(start_process, tmp_path):
    import signal

    from conftest import wait_until

    node = start_process('dmn_localization_node', '--ros-args', '-p',
                         f'model_path:={tmp_path / "missing.pt"}')
    assert wait_until(lambda: 'active: processing frames' in node.log(), 60), node.log()
    assert node.stop(sig=signal.SIGTERM) == 0, f'node did not exit cleanly:\n{node.log()}'
