"""Spin an executor until the process is asked to stop, as every long-running script here does."""

from __future__ import annotations

from rclpy.executors import Executor, ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

#: What rclpy raises from its C layer, here: building a wait set on a context already down.
RCLError = _rclpy.RCLError


def spin_until_shutdown(executor: Executor) -> None:
    """
    Spin ``executor`` until Ctrl-C, SIGTERM or the shutdown of its context; then return.

    rclpy's signal handler shuts the context down from its own thread. The executor can
    then find the context invalid while it builds its next wait set, and raise
    ``RCLError`` ('the given context is not valid') before ``KeyboardInterrupt`` reaches
    the main thread. Once the context is down, that error is a shutdown like the others:
    the process exits with status 0, as after any Ctrl-C. Every other error, and this one
    while the context is still up, propagates.
    """
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if executor.context.ok():
            raise
