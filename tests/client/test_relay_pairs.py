"""The send and receive pipelines against the server's own code, in one event loop
(tests/relay.py): two or three real clients, a real relay, no server process."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay import InProcessRelay, crash, texts
from sealpost.client import Client, ReceiptReceived, SendFailed, ServerUnavailable
from sealpost.client.store.messages import OutgoingRow
from sealpost.client.transport import WINDOW
from sealpost.protocol.content import TextContent


def run(scenario: Callable[[InProcessRelay], Awaitable[Any]], root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


def statuses(client: Client, peer: str) -> list[tuple[str, str]]:
    return [(m.text, m.status) for m in client.history(peer) if m.outgoing]


def test_a_pair_exchanges_messages_both_ways(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        sent = await alice.send("bob", "hello bob")
        assert sent.outgoing and sent.status == "sent" and sent.peer == "bob"
        events = await bob.receive(wait=5)
        assert texts(events) == ["hello bob"]
        (got,) = [e.message for e in events if hasattr(e, "message")]
        assert got.id == sent.id and got.peer == "alice" and not got.outgoing
        await bob.send("alice", "hello alice")
        await bob.send("alice", "second")
        assert texts(await alice.receive(wait=5)) == ["hello alice", "second"]
        # both sides keep the whole conversation, in order, with the other's name
        assert [(m.text, m.outgoing) for m in alice.history("bob")] == [
            ("hello bob", True),
            ("hello alice", False),
            ("second", False),
        ]
        assert [(m.text, m.outgoing) for m in bob.history("alice")] == [
            ("hello bob", False),
            ("hello alice", True),
            ("second", True),
        ]
        # and nothing is queued twice: a second receive brings no message
        assert texts(await bob.receive(wait=0)) == []

    run(scenario, tmp_path)


def test_a_delivery_receipt_marks_the_message_delivered(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        sent = await alice.send("bob", "did you get this?")
        assert statuses(alice, "bob") == [("did you get this?", "sent")]
        # Bob's receive stores the message, then sends the receipt before it returns
        assert texts(await bob.receive(wait=5)) == ["did you get this?"]
        events = await alice.receive(wait=0)  # a receipt is not a message: no waiting for one
        receipts = [e for e in events if isinstance(e, ReceiptReceived)]
        assert receipts and receipts[0].peer == "bob"
        assert sent.id in {i for r in receipts for i in r.message_ids}
        assert statuses(alice, "bob") == [("did you get this?", "delivered")]

    run(scenario, tmp_path)


def test_a_group_message_reaches_both_other_members(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice = await relay.client("alice")
        bob, carol = await relay.client("bob"), await relay.client("carol")
        view = await alice.create_group("crew", ["bob", "carol"])
        assert sorted(view.members) == ["alice", "bob", "carol"]
        await alice.send("#crew", "hello crew")
        for member in (bob, carol):
            events = await member.receive(wait=5)
            assert texts(events) == ["hello crew"], member.username
            (message,) = [e.message for e in events if hasattr(e, "message")]
            assert message.group is not None and message.author == "alice"
        # once the sender key is shared, a group message is one sealed send for everyone
        sends_before = relay.faults.sealed_sends
        await alice.send("#crew", "again")
        assert relay.faults.sealed_sends - sends_before == 1
        assert texts(await bob.receive(wait=5)) == ["again"]
        assert texts(await carol.receive(wait=5)) == ["again"]
        await carol.send("#crew", "hi from carol")
        assert texts(await alice.receive(wait=5)) == ["hi from carol"]
        assert texts(await bob.receive(wait=5)) == ["hi from carol"]

    run(scenario, tmp_path)


@pytest.mark.parametrize("lost", ["send", "answer"])
def test_a_message_lost_in_a_crash_is_sent_again_once(tmp_path: Path, lost: str) -> None:
    """Alice's process dies while a send is in flight: before the server stored it
    ("send"), or after it stored it and before the answer arrived ("answer"). Restarted
    from what her disk held, she sends the outbox again with the same bytes: Bob gets the
    message exactly once, her copy ends up sent, and the sessions go on both ways."""

    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await alice.send("bob", "before")
        assert texts(await bob.receive(wait=5)) == ["before"]
        if lost == "send":
            relay.faults.lose_sends = 1
        else:
            relay.faults.lose_answers = 1
        in_flight = asyncio.ensure_future(alice.send("bob", "through the crash"))
        await relay.faults.wait_lost()
        assert relay.faults.lost == [lost] and not in_flight.done()
        disk = crash(alice, tmp_path / "alice-after-crash")
        # the dead process: it sends nothing more (its socket goes, its send fails)
        relay.faults.cut()
        with pytest.raises(ServerUnavailable):
            await in_flight
        await alice.close()

        queued = texts(await bob.receive(wait=0.2))
        assert queued == ([] if lost == "send" else ["through the crash"])
        alice = await relay.open(disk)
        assert statuses(alice, "bob") == [("before", "sent"), ("through the crash", "sending")]
        assert await alice.flush_outbox() == 1
        assert statuses(alice, "bob")[-1] == ("through the crash", "sent")
        assert await alice.flush_outbox() == 0  # the outbox is empty now
        again = texts(await bob.receive(wait=0.5 if queued else 5))
        assert queued + again == ["through the crash"]  # once, however it went
        assert [m.text for m in bob.history("alice")] == ["before", "through the crash"]
        await alice.send("bob", "after")
        assert texts(await bob.receive(wait=5)) == ["after"]
        await bob.send("alice", "got them")
        assert "got them" in texts(await alice.receive(wait=5))

    run(scenario, tmp_path)


def test_a_message_stored_but_not_acknowledged_is_not_shown_twice(tmp_path: Path) -> None:
    """Bob stores two messages and dies before his acknowledgements reach the server: it
    pushes both again to the restarted Bob, who acknowledges them and shows neither twice."""

    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await alice.send("bob", "one")
        await alice.send("bob", "two")
        relay.faults.lose_acks = 2
        assert texts(await bob.receive(wait=5)) == ["one", "two"]
        assert relay.faults.lost == ["ack", "ack"]
        path = bob.store.path
        await bob.close()
        bob = await relay.open(path)
        assert texts(await bob.receive(wait=0)) == []  # pushed again, dropped as known
        assert [m.text for m in bob.history("alice")] == ["one", "two"]
        # acknowledged this time: nothing is pushed a third time
        await bob.close()
        bob = await relay.open(path)
        assert texts(await bob.receive(wait=0)) == []
        assert relay.faults.lost == ["ack", "ack"]
        await alice.send("bob", "three")
        assert texts(await bob.receive(wait=5)) == ["three"]

    run(scenario, tmp_path)


def test_a_send_whose_connection_breaks_before_the_answer_is_sent_again(
    tmp_path: Path,
) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await alice.send("bob", "before")
        assert texts(await bob.receive(wait=5)) == ["before"]
        relay.faults.lose_answers = 1
        in_flight = asyncio.ensure_future(alice.send("bob", "stored, unanswered"))
        await relay.faults.wait_lost()
        relay.faults.cut()  # the connection breaks; the process lives on
        with pytest.raises(ServerUnavailable):
            await in_flight
        assert texts(await bob.receive(wait=5)) == ["stored, unanswered"]
        await alice.flush_outbox()  # what receive() and events() do first
        # the server has it and Bob shows it: it is not a failed message
        assert statuses(alice, "bob")[-1] == ("stored, unanswered", "sent")

    run(scenario, tmp_path)


def test_a_message_reaches_the_other_devices_of_both_accounts(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        laptop = await relay.link(alice, "laptop")
        assert laptop.account_id == alice.account_id and laptop.device_id != alice.device_id
        await alice.receive(wait=0)  # the notice that the laptop was linked
        sent = await alice.send("bob", "from the phone")
        assert texts(await bob.receive(wait=5)) == ["from the phone"]
        # the laptop stores the phone's own copy: an outgoing message to bob, same id
        await laptop.receive(wait=0)  # stored before send() returned: in the backlog
        copies = laptop.history("bob")
        assert [(m.text, m.outgoing, m.peer, m.id) for m in copies] == [
            ("from the phone", True, "bob", sent.id)
        ]
        await bob.send("alice", "to both")
        assert texts(await alice.receive(wait=5)) == ["to both"]
        assert texts(await laptop.receive(wait=5)) == ["to both"]
        assert [m.text for m in laptop.history("bob")] == ["from the phone", "to both"]

    run(scenario, tmp_path)


def test_a_batch_cut_off_partway_leaves_no_error_unretrieved(tmp_path: Path) -> None:
    """The connection dies with a batch handed over in part (the server stored the first
    send, its answer and everything after it lost; the window full, the rest waiting):
    every send is kept, goes again once, and no future's error is left for asyncio to
    report as "exception was never retrieved"."""
    reported: list[str] = []
    total = WINDOW + 16

    async def scenario(relay: InProcessRelay) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: reported.append(str(ctx.get("message"))))
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await alice.send("bob", "before")
        assert texts(await bob.receive(wait=5)) == ["before"]
        relay.faults.lose_answers = 1
        sends = [asyncio.ensure_future(alice.send("bob", f"m{i:03d}")) for i in range(total)]
        await relay.faults.wait_lost()
        relay.faults.cut()
        results = await asyncio.gather(*sends, return_exceptions=True)
        assert all(isinstance(r, ServerUnavailable) for r in results), results
        del sends, results
        gc.collect()
        assert alice.waiting() == total  # every one kept in the outbox
        assert await alice.flush_outbox() == total
        assert statuses(alice, "bob")[1:] == [(f"m{i:03d}", "sent") for i in range(total)]
        got: list[str] = []
        while batch := texts(await bob.receive(wait=2)):
            got += batch
        assert got == [f"m{i:03d}" for i in range(total)]  # once each, in order

    run(scenario, tmp_path)
    gc.collect()
    assert not [m for m in reported if "never retrieved" in m], reported


def test_an_unreadable_outbox_row_or_pending_send_holds_up_nothing(tmp_path: Path) -> None:
    """One poison row never blocks a queue: an outbox row that no longer decodes (damage,
    or a profile written by a newer client) is dropped, and the row after it is sent; a
    pending send whose content no longer decodes becomes failed, said by a SendFailed
    event, and the pending send after it goes."""

    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await alice.send("bob", "before")
        assert texts(await bob.receive(wait=5)) == ["before"]
        relay.faults.lose_sends = 1
        in_flight = asyncio.ensure_future(alice.send("bob", "after the poison"))
        await relay.faults.wait_lost()
        disk = crash(alice, tmp_path / "alice-after-crash")
        relay.faults.cut()
        with pytest.raises(ServerUnavailable):
            await in_flight
        await alice.close()

        alice = await relay.open(disk)
        contact = alice._services.directory.by_name("bob")
        assert contact is not None
        poison_id, kept_id = os.urandom(16), os.urandom(16)
        now = int(time.time() * 1000)
        with alice.store.unit() as repos:
            db = repos.outbox._db
            # an outbox row older than the real one, whose payload decodes as nothing
            db.execute("INSERT INTO outbox (id, message_uuid, payload) VALUES (0, x'', x'ff00')")
            for message_id, text in ((poison_id, "poison"), (kept_id, "kept")):
                row = OutgoingRow(
                    message_id, contact.account_id, text, now, now, alice.account_id,
                    None, None, None,
                )  # fmt: skip
                repos.messages.add_outgoing([row])
            db.execute(
                "INSERT INTO pending_sends (message_uuid, peer, group_id, content)"
                " VALUES (?, 'bob', NULL, x'ff')",
                (poison_id,),
            )
            content = TextContent(kept_id, now, alice._ctx.delivery_token, "alice", "kept")
            repos.pending.add(kept_id, "bob", None, content)
        assert await alice.flush_outbox() == 2  # the real outbox row, then "kept"
        assert alice.store.repos().outbox.unreadable() == []  # the poison row is gone
        assert alice.store.repos().pending.count() == 0
        got = texts(await bob.receive(wait=5))
        if len(got) < 2:
            got += texts(await bob.receive(wait=5))
        assert got == ["after the poison", "kept"]
        assert statuses(alice, "bob")[-3:] == [
            ("after the poison", "sent"),
            ("poison", "failed"),
            ("kept", "sent"),
        ]
        failed = [e for e in alice.take_events() if isinstance(e, SendFailed)]
        assert [(e.peer, e.message_id) for e in failed] == [("bob", poison_id)]

    run(scenario, tmp_path)
