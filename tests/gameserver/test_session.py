"""The per-connection session state machine, without sockets."""

import json

from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gameserver import protocol
from gameserver.session import (ACTIVE, AWAITING_AUTH, CLOSED, JOINING, Authenticate, Close, LeaveMatch, Limits,
                                Send, Session, Submit)


def frame(**body):
    return json.dumps(body)


def active(role="player", limits=Limits()):
    session = Session(protocol.JSON, 0.0, limits)
    [action] = session.receive(frame(t="auth", token="x"), 0.0)
    assert isinstance(action, Authenticate)
    session.admitted(role)
    return session


def test_auth_first_then_inputs():
    session = Session(protocol.JSON, 0.0)
    [action] = session.receive(frame(t="input", seq=1, data={}), 0.0)
    assert isinstance(action, Send) and action.frame["code"] == "not_authenticated"
    [action] = session.receive(frame(t="auth", token="tok", resume_tick=5), 0.0)
    assert action == Authenticate(protocol.Auth("tok", 5))
    assert session.state == JOINING
    [action] = session.receive(frame(t="input", seq=1, data={}), 0.0)
    assert action.frame["code"] == "not_ready"
    session.admitted("player")
    [action] = session.receive(frame(t="input", seq=1, data={"dx": 1}), 0.0)
    assert action == Submit(protocol.Input(1, {"dx": 1}))


def test_ping_is_answered_in_every_state():
    session = Session(protocol.JSON, 0.0)
    assert session.receive(frame(t="ping", id=3), 0.0) == [Send({"t": "pong", "id": 3})]
    session = active()
    assert session.receive(frame(t="ping", id="x"), 0.0) == [Send({"t": "pong", "id": "x"})]


def test_spectators_cannot_send_inputs():
    session = active(role="spectator")
    [action] = session.receive(frame(t="input", seq=1, data={}), 0.0)
    assert action.frame["code"] == "forbidden" and action.frame["seq"] == 1


def test_rate_limit_answers_with_an_error_then_closes():
    session = active(limits=Limits(input_rate=10, input_burst=10, error_rate=1, error_burst=5))
    results = [session.receive(frame(t="input", seq=i, data={}), 0.0) for i in range(1, 30)]
    kinds = [type(r[0]).__name__ if r else None for r in results]
    assert kinds[:10] == ["Submit"] * 10
    assert results[10][0].frame["code"] == "rate_limited"
    assert Close(protocol.CLOSE_POLICY, "too many errors") in [a for r in results for a in r]
    assert session.state == CLOSED
    # time refills the bucket: a new session sending slowly is never limited
    session = active(limits=Limits(input_rate=10, input_burst=1))
    for i in range(1, 50):
        assert isinstance(session.receive(frame(t="input", seq=i, data={}), i * 0.1)[0], Submit)


def test_leave_closes_normally():
    session = active()
    assert session.receive(frame(t="leave"), 0.0) == [LeaveMatch(), Close(protocol.CLOSE_NORMAL, "left the match")]
    assert session.receive(frame(t="ping"), 0.0) == []


@given(st.lists(st.one_of(st.text(max_size=50), st.binary(max_size=50)), max_size=50))
def test_garbage_never_raises_and_never_submits(frames):
    session = Session(protocol.JSON, 0.0)
    for i, data in enumerate(frames):
        for action in session.receive(data, i * 0.01):
            assert not isinstance(action, Submit)


class SessionMachine(RuleBasedStateMachine):
    """Whatever arrives, the session only moves forward and answers every frame."""

    def __init__(self):
        super().__init__()
        self.session = Session(protocol.JSON, 0.0, Limits(input_rate=5, input_burst=5, error_rate=1, error_burst=10))
        self.now = 0.0
        self.authenticated = False

    @rule(dt=st.floats(0, 2))
    def wait(self, dt):
        self.now += dt

    @rule(seq=st.integers(-1, 100))
    def send_input(self, seq):
        actions = self.session.receive(frame(t="input", seq=seq, data={}), self.now)
        if self.session.state != CLOSED:
            assert len(actions) == 1
        if any(isinstance(a, Submit) for a in actions):
            assert self.session.state == ACTIVE and seq >= 1

    @rule()
    def send_auth(self):
        before = self.session.state
        actions = self.session.receive(frame(t="auth", token="t"), self.now)
        if before == AWAITING_AUTH:
            assert actions == [Authenticate(protocol.Auth("t"))]

    @precondition(lambda self: self.session.state == JOINING)
    @rule()
    def admit(self):
        self.session.admitted("player")

    @rule(data=st.text(max_size=20))
    def send_garbage(self, data):
        self.session.receive(data, self.now)

    @rule()
    def leave(self):
        self.session.receive(frame(t="leave"), self.now)

    @invariant()
    def state_is_known(self):
        assert self.session.state in (AWAITING_AUTH, JOINING, ACTIVE, CLOSED)


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
