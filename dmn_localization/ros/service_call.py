"""
Service calls that survive a lost response.

Fast DDS drops a service response when the server has not yet discovered the client's
reply reader ("failed to send response (timeout)"): a discovery race that a client which
already sees the service can still lose, more often with nodes that offer many services
(a lifecycle node offers six). An idempotent request can simply be sent again;
:func:`call_idempotent` does that, one place for the tests, the live replay and the
benchmarks. ``~/build_map`` is one: served twice with the same views, the second time
keeps the map, the belief and the filter's random draws (the node compares the views).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

#: ``wait(future, seconds)``: block up to ``seconds`` (spinning, or while another thread
#: spins) and return whether ``future`` is done.
Wait = Callable[[Any, float], bool]


def spin_wait(executor: Any) -> Wait:
    """Return a :data:`Wait` that spins ``executor`` in this thread."""
    def wait(future: Any, seconds: float) -> bool:
        executor.spin_until_future_complete(future, timeout_sec=seconds)
        return bool(future.done())
    return wait


def call_idempotent(client: Any, request: Any, wait: Wait, timeout: float,
                    attempts: int = 3) -> Optional[Any]:
    """
    Call ``client`` with ``request``; return the response, or None after ``timeout`` seconds.

    The request is sent again after each ``timeout / attempts`` seconds without a response,
    and the unanswered call is forgotten. Only for requests that may be served twice.
    """
    if attempts < 1:
        raise ValueError(f'attempts must be at least 1, got {attempts}')
    for _ in range(attempts):
        future = client.call_async(request)
        if wait(future, timeout / attempts):
            return future.result()
        client.remove_pending_request(future)
    return None
