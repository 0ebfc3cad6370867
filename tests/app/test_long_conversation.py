"""A long conversation in the app, against a real server and real profiles: it opens at
its newest page, mounts no widget per message, reads the pages before as the view
reaches the top (in order, none twice), and a search hit far back opens with the pages
around it, the pages after it read as the view reaches the bottom."""

from __future__ import annotations

import time
from pathlib import Path

from app_helpers import chat_app, make_client, passcode_of, run, unlock, until

from integration.helpers import ServerProcess
from sealpost.app.messages import PAGE, MessageList

TOTAL = 3 * PAGE + 7


def test_a_long_conversation_is_read_a_page_at_a_time(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        await bob.send(alice.username, "message 0")
        await alice.receive(wait=10)
        start = int(time.time() * 1000) - TOTAL * 1000
        with alice.store.unit() as repos:  # the rest of a long history, as stored
            for n in range(1, TOTAL):
                at = start + n * 1000
                word = " needle" if n == 20 else ""
                repos.messages.add_received(
                    n.to_bytes(16, "big"), bob.account_id, bob.account_id, False,
                    f"message {n}{word}", at, at, None, None,
                )  # fmt: skip
        profile, name = alice.store.path, alice.username
        await alice.close()
        await bob.close()
        app = chat_app(profile)
        async with app.run_test(size=(100, 30)) as pilot:
            main = await unlock(pilot, passcode_of(name))
            await main.open(bob.username)
            view = main.query_one(MessageList)

            def shown() -> list[int]:
                return [int(i.message.text.split()[1]) for i in view.messages()]

            async def scroll_until_more(top: bool) -> None:
                loaded = len(shown())
                for _ in range(200):  # as a user keeps scrolling
                    if top:
                        view.scroll_home(animate=False, immediate=True)
                    else:
                        view.scroll_end(animate=False, immediate=True)
                    await pilot.pause(0.05)
                    if len(shown()) > loaded:
                        return
                raise AssertionError("no page was read")

            assert shown() == list(range(TOTAL - PAGE, TOTAL))
            assert not view.children  # lines drawn, no widget per message
            assert not view.complete and view.newest
            # reaching the top reads the page before, the same messages staying in view
            while not view.complete:
                await scroll_until_more(top=True)
            assert shown() == list(range(TOTAL))
            # the cursor walks the whole conversation
            view.focus()
            await pilot.press("home")
            assert view.selected is not None and view.selected.message.text == "message 0"
            # the mouse: a click chooses the message under it; one in the list opens
            view.scroll_home(animate=False, immediate=True)
            await pilot.pause()
            await pilot.click("#messages", offset=(4, 1))  # under "── day ──": message 0
            assert view.index == 0
            await pilot.click("#messages", offset=(4, 3))  # the next message's header
            assert view.index == 1
            main.current = None
            await pilot.click("#conversations", offset=(3, 0))
            await until(pilot, lambda: main.current == bob.username, "opened by a click")

            # a hit far back: the pages around it, the cursor on it
            await main.open(bob.username, around=(20).to_bytes(16, "big"))
            assert view.selected is not None and view.selected.message.text.endswith("needle")
            assert shown() == list(range(1 + 20 + PAGE))  # 0..20, then a page after it
            assert not view.newest
            while not view.newest:
                await scroll_until_more(top=False)
            assert shown() == list(range(TOTAL))
            await app.shutdown()

    run(scenario())
