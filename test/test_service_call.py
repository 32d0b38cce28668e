"""call_idempotent asks again when a response is lost, and gives up after its timeout."""

from dmn_localization.ros.service_call import call_idempotent
import pytest


class Future:

    def __init__(self, answer):
        self.answer = answer

    def done(self):
        return self.answer is not None

    def result(self):
        return self.answer


class Client:
    """A service client whose first ``lost`` responses never arrive."""

    def __init__(self, lost):
        self.lost = lost
        self.calls, self.forgotten = [], []

    def call_async(self, request):
        self.calls.append(request)
        return Future(None if len(self.calls) <= self.lost else f'answer to {request}')

    def remove_pending_request(self, future):
        self.forgotten.append(future)


def waited(log):
    def wait(future, seconds):
        log.append(seconds)
        return future.done()
    return wait


def test_a_lost_response_is_asked_for_again():
    client, log = Client(lost=2), []
    assert call_idempotent(client, 'req', waited(log), timeout=9.0) == 'answer to req'
    assert client.calls == ['req'] * 3 and len(client.forgotten) == 2
    assert log == [3.0, 3.0, 3.0]


def test_no_response_within_the_timeout_is_none():
    client, log = Client(lost=5), []
    assert call_idempotent(client, 'req', waited(log), timeout=4.0, attempts=2) is None
    assert len(client.calls) == 2 and len(client.forgotten) == 2 and sum(log) == 4.0


def test_an_answered_call_is_sent_once():
    client = Client(lost=0)
    assert call_idempotent(client, 'req', waited([]), timeout=1.0) == 'answer to req'
    assert client.calls == ['req'] and client.forgotten == []


def test_attempts_must_be_positive():
    with pytest.raises(ValueError, match='at least 1'):
        call_idempotent(Client(lost=0), 'req', waited([]), timeout=1.0, attempts=0)
