"""What a client is told over a real socket when storage gets in the way (docs/protocol.md#close-codes):
a match whose file the storage refuses for now (a full disk, a read-only data directory) answers
1013, try again later, and admits the client once the storage takes the file again; a match that
failed on a storage error answers 1011 to its connections and 4012 to anyone who comes back."""

import pytest
import trio

from abuse_helpers import Closed
from gameserver import protocol, storage
from gameserver.storage import MatchStore


async def refused(stack, match_id, player):
    ws = await stack.connect(match_id)
    with trio.fail_after(10):
        with pytest.raises(Closed) as closed:
            await ws.auth(stack.token(match_id, player))
    await ws.aclose()
    return closed.value


async def test_a_match_the_storage_refuses_answers_1013_then_admits_once_it_takes_it_again(stack, monkeypatch):
    match_id = await stack.match("connect_four")  # created, not activated: its file is closed
    real_open = MatchStore.open.__func__

    def unwritable(cls, path, *, read_only=False, **kwargs):
        if not read_only:
            raise storage.StorageUnavailable(f"{path}: cannot open (unable to open database file)")
        return real_open(cls, path, read_only=read_only, **kwargs)

    monkeypatch.setattr(MatchStore, "open", classmethod(unwritable))
    closed = await refused(stack, match_id, "red")
    assert closed.code == protocol.CLOSE_TRY_AGAIN == 1013
    assert closed.reason.startswith("try again later") and "unable to open database file" in closed.reason
    assert str(storage.match_path(stack.node.data_dir, match_id)) not in closed.reason  # why, not where
    assert match_id in stack.node.unfinished  # not damaged: still a match of this node
    monkeypatch.undo()
    red, welcome = await stack.join(match_id, "red")  # trying again works once the storage does
    assert welcome["match"] == match_id and welcome["role"] == "player"
    await red.aclose()


async def test_a_damaged_file_still_answers_4004(stack):
    match_id = await stack.match("connect_four")
    storage.match_path(stack.node.data_dir, match_id).write_bytes(b"not a database at all" * 100)
    closed = await refused(stack, match_id, "red")
    assert closed.code == protocol.CLOSE_MATCH_NOT_FOUND and "cannot be loaded" in closed.reason


async def test_a_match_failed_on_storage_answers_1011_then_4012(stack):
    match_id = await stack.match("arena")
    ann, _ = await stack.join(match_id, "ann")
    actor = stack.node.actors[match_id]

    def disk_full(record, now):
        raise OSError(28, "No space left on device")

    actor.store.commit_step = disk_full  # the next tick's commit fails
    with trio.fail_after(10):
        _, closed = await ann.until_close()
    assert closed.code == protocol.CLOSE_INTERNAL and "storage error" in closed.reason
    again = await refused(stack, match_id, "ann")
    assert again.code == protocol.CLOSE_MATCH_OVER == 4012 and "failed" in again.reason
