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


def test_pings_past_their_rate_are_refused_and_spend_the_error_budget():
    session = Session(protocol.JSON, 0.0, Limits(ping_rate=1, ping_burst=3, error_rate=1, error_burst=2))
    answers = [session.receive(frame(t="ping", id=i), 0.0) for i in range(6)]
    assert answers[:3] == [[Send({"t": "pong", "id": i})] for i in range(3)]
    assert [a[0].frame["code"] for a in answers[3:5]] == ["rate_limited", "rate_limited"]
    assert answers[5] == [Close(protocol.CLOSE_POLICY, "too many errors")]
    session = Session(protocol.JSON, 0.0, Limits(ping_rate=1, ping_burst=1))
    for second in range(30):  # one a second is never limited
        assert session.receive(frame(t="ping", id=second), float(second)) == [Send({"t": "pong", "id": second})]


class Bucket:
    """The model's token bucket: written out again here, not taken from the code under test."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1 - 1e-9:
            self.tokens -= 1
            return True
        return False


LIMITS = Limits(input_rate=4, input_burst=6, error_rate=1, error_burst=5, ping_rate=2, ping_burst=3)
GARBAGE = ["", "nope", "[]", '{"t":"x"}', '{"t":"input","seq":0,"data":{}}', '{"t":"ping","id":[1]}',
           '{"t":"input","seq":1,"data":NaN}', '{"t":"ping","id":"\\ud800"}', '{"t":"leave","x":1}']


class SessionAgainstModel(RuleBasedStateMachine):
    """Every frame, in every state, at any time: the session's actions are exactly the model's
    (docs/protocol.md: states, error codes, the three buckets, the 1008 close)."""

    def __init__(self):
        super().__init__()
        self.fmt = protocol.JSON
        self.session = Session(self.fmt, 0.0, LIMITS)
        self.now = 0.0
        self.state = AWAITING_AUTH
        self.role = None
        self.inputs = Bucket(LIMITS.input_rate, LIMITS.input_burst)
        self.errors = Bucket(LIMITS.error_rate, LIMITS.error_burst)
        self.pings = Bucket(LIMITS.ping_rate, LIMITS.ping_burst)
        self.authenticated = 0

    def error(self, code, seq=None):
        if not self.errors.take(self.now):
            self.state = CLOSED
            return [Close(protocol.CLOSE_POLICY, "too many errors")]
        return [("error", code, seq)]

    def check(self, body_or_text, expected):
        text = body_or_text if isinstance(body_or_text, str) else json.dumps(body_or_text)
        actions = self.session.receive(text, self.now)
        seen = [("error", a.frame["code"], a.frame.get("seq")) if isinstance(a, Send) and a.frame["t"] == "error"
                else a for a in actions]
        assert seen == expected, (text, seen, expected)
        assert self.session.state == self.state

    @rule(dt=st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.5, 1.0, 3.0]))
    def wait(self, dt):
        self.now += dt

    @rule(seq=st.integers(-2, 200))
    def input(self, seq):
        body = {"t": "input", "seq": seq, "data": {"dx": 1}}
        if self.state == CLOSED:
            expected = []
        elif seq < 1:
            expected = self.error("bad_frame")
        elif self.state == AWAITING_AUTH:
            expected = self.error("not_authenticated")
        elif self.state == JOINING:
            expected = self.error("not_ready", seq)
        elif self.role != "player":
            expected = self.error("forbidden", seq)
        elif not self.inputs.take(self.now):
            expected = self.error("rate_limited", seq)
        else:
            expected = [Submit(protocol.Input(seq, {"dx": 1}))]
        self.check(body, expected)

    @rule(ping_id=st.none() | st.integers(-5, 5) | st.text(max_size=3))
    def ping(self, ping_id):
        if self.state == CLOSED:
            expected = []
        elif self.pings.take(self.now):
            expected = [Send({"t": "pong", "id": ping_id})]
        else:
            expected = self.error("rate_limited")
        self.check({"t": "ping", "id": ping_id}, expected)

    @rule(resume=st.none() | st.integers(0, 10))
    def auth(self, resume):
        body = {"t": "auth", "token": "tok"} | ({} if resume is None else {"resume_tick": resume})
        if self.state == CLOSED:
            expected = []
        elif self.state == AWAITING_AUTH:
            self.state = JOINING
            self.authenticated += 1
            expected = [Authenticate(protocol.Auth("tok", resume))]
        elif self.state == JOINING:
            expected = self.error("not_ready")
        else:
            expected = self.error("already_authenticated")
        self.check(body, expected)

    @rule(text=st.sampled_from(GARBAGE))
    def garbage(self, text):
        self.check(text, [] if self.state == CLOSED else self.error("bad_frame"))

    @rule()
    def leave(self):
        if self.state == CLOSED:
            expected = []
        elif self.state == AWAITING_AUTH:
            expected = self.error("not_authenticated")
        elif self.state == JOINING:
            expected = self.error("not_ready")
        else:
            self.state = CLOSED
            expected = [LeaveMatch(), Close(protocol.CLOSE_NORMAL, "left the match")]
        self.check({"t": "leave"}, expected)

    @precondition(lambda self: self.state == JOINING)
    @rule(role=st.sampled_from(["player", "spectator"]))
    def admit(self, role):
        self.session.admitted(role)
        self.state, self.role = ACTIVE, role

    @rule(role=st.sampled_from(["player", "spectator"]))
    def admitted_out_of_turn(self, role):
        """The shell never admits a session that is not joining; if it did, nothing may change."""
        if self.state != JOINING:
            self.session.admitted(role)
            assert self.session.state == self.state

    @rule(code=st.sampled_from([1001, 4009, 4010]))
    def close(self, code):
        expected = [] if self.state == CLOSED else [Close(code, "closed")]
        self.state = CLOSED
        assert self.session.close(code, "closed") == expected
        assert self.session.state == CLOSED

    @invariant()
    def authenticates_at_most_once(self):
        assert self.authenticated <= 1


TestSessionAgainstModel = SessionAgainstModel.TestCase
TestSessionAgainstModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
