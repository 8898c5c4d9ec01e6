"""The actor's tick path as a state machine: inbox -> step -> one commit -> acknowledgements.

Crashes drop everything in memory (the inbox and the simulation) and may interrupt a commit
half-way; recovery rebuilds from the file. Invariants: no acknowledged input is missing from the
input log, and the state after recovery equals the state at the last commit.
"""


from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gameserver import storage
from gameserver.games.arena import Arena, Params
from gameserver.records import step_record
from gameserver.recovery import create_match_file, restore
from gameserver.simulation import INPUT, JOIN, LEAVE, Command
from gameserver.storage import MatchStore

MATCH = "1" * 26
PLAYERS = ("ann", "bob", "cyd", "dee", "eve")
SNAPSHOT_EVERY = 4


class ActorModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import tempfile
        from pathlib import Path

        self._tmp = tempfile.TemporaryDirectory()
        self.path = storage.match_path(Path(self._tmp.name), MATCH)
        meta, self.sim = create_match_file(self.path, Arena(), match_id=MATCH, params=Params(), seed=3,
                                           snapshot_every=SNAPSHOT_EVERY, now=0.0)
        self.store = MatchStore.open(self.path)
        self.inbox: list[Command] = []
        self.next_seq = {p: 1 for p in PLAYERS}
        self.unacked: dict[str, dict[int, dict]] = {p: {} for p in PLAYERS}  # what each client would resend
        self.acked: dict[str, set[int]] = {p: set() for p in PLAYERS}
        self.committed_state = self.sim.canonical()

    def teardown(self):
        self.store.close()
        self._tmp.cleanup()

    @rule(player=st.sampled_from(PLAYERS))
    def join(self, player):
        self.inbox.append(Command(JOIN, player))

    @rule(player=st.sampled_from(PLAYERS))
    def leave(self, player):
        self.inbox.append(Command(LEAVE, player))

    @rule(player=st.sampled_from(PLAYERS), dx=st.integers(-2, 2), dy=st.floats(-1.5, 1.5))
    def send_input(self, player, dx, dy):
        seq = self.next_seq[player]
        self.next_seq[player] += 1
        data = {"dx": dx, "dy": dy}
        self.unacked[player][seq] = data
        self.inbox.append(Command(INPUT, player, seq, data))

    @rule(player=st.sampled_from(PLAYERS))
    def resend_everything(self, player):
        """A client that resends all its unacknowledged inputs (and an old one): duplicates are harmless."""
        for seq, data in sorted(self.unacked[player].items()):
            self.inbox.append(Command(INPUT, player, seq, data))
        if self.acked[player]:
            seq = max(self.acked[player])
            self.inbox.append(Command(INPUT, player, seq, {"dx": 0, "dy": 0}))

    @rule()
    def tick(self):
        commands, self.inbox = self.inbox, []
        step = self.sim.step(commands)
        self.store.commit_step(step_record(self.sim, step, SNAPSHOT_EVERY), now=float(step.tick))
        self.committed_state = self.sim.canonical()
        for rejection in step.rejected:  # refused with an error frame: the client drops it, never acknowledged
            command = rejection.command
            if command.kind == INPUT and rejection.code != "duplicate":
                self.unacked[command.player].pop(command.seq, None)
        # only now may acknowledgements leave: every state frame carries last_seq
        for player, last in self.sim.last_seq.items():
            for seq in [s for s in self.unacked[player] if s <= last]:
                del self.unacked[player][seq]
                self.acked[player].add(seq)
        for player in PLAYERS:
            if player not in self.sim.seated:
                self.unacked[player].clear()  # a player without a seat has nothing to resend

    @precondition(lambda self: self.sim.tick > 0)
    @rule(partial=st.booleans())
    def crash_and_recover(self, partial):
        before_tick, before_state = self.sim.tick, self.committed_state
        if partial:  # killed in the middle of a commit: some rows written, no COMMIT
            self.store.conn.execute("BEGIN")
            self.store.conn.execute("INSERT INTO steps (tick, checksum, commands) "
                                    "VALUES (?, 1, '[[\"input\",\"ann\",999,\"{}\"]]')", (before_tick + 1,))
        self.store.conn.close()  # the process is gone: nothing in memory survives
        self.inbox = []
        self.store = MatchStore.open(self.path)
        self.sim = restore(self.store, Arena())
        assert self.sim.tick == before_tick
        assert self.sim.canonical() == before_state
        # clients reconnect and resend what was not acknowledged
        for player in PLAYERS:
            for seq, data in sorted(self.unacked[player].items()):
                self.inbox.append(Command(INPUT, player, seq, data))

    @invariant()
    def acknowledged_inputs_are_in_the_log(self):
        logged = set(self.store.conn.execute(
            "SELECT player_id, seq FROM inputs WHERE kind = 'input'").fetchall())
        for player, seqs in self.acked.items():
            for seq in seqs:
                assert (player, seq) in logged, f"acknowledged input {player}#{seq} is not in the log"

    @invariant()
    def the_log_has_no_duplicates(self):
        rows = self.store.conn.execute(
            "SELECT player_id, seq, COUNT(*) FROM inputs WHERE kind = 'input' GROUP BY player_id, seq "
            "HAVING COUNT(*) > 1").fetchall()
        assert rows == []


TestActorModel = ActorModel.TestCase
TestActorModel.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
