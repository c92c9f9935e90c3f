"""examples/auth: a token checked before the upgrade, ids from users, per-user delivery, rooms.

The example runs as a child process; Python clients (``wsmvc.dial``, and a raw aiohttp
websocket for what a misbehaving client could send) and neffos.js from Node drive it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

import aiohttp
import pytest

import wsmvc
from wsmvc import ClientConn, EventError, NSConn
from wsmvc.testing import Inbox

from .conftest import Example, Node, StartExample

SECRET = "test-secret"
WAIT = 5.0


class Auth:
    """The running example, tokens for its users, and clients closed at the end."""

    def __init__(self, app: Example) -> None:
        self.app = app
        self.clients: list[ClientConn] = []
        self._tokens: dict[str, str] = {}

    def token(self, user: str, groups: str = "", secret: str = SECRET) -> str:
        key = f"{user}|{groups}|{secret}"
        if key not in self._tokens:
            out = self.app.run_command(
                "--secret", secret, "--issue-token", user, "--groups", groups
            )
            self._tokens[key] = out.strip()
        return self._tokens[key]

    async def dial(
        self,
        headers: Mapping[str, str] | None = None,
        *,
        query: str = "",
        inbox: Inbox | None = None,
    ) -> ClientConn:
        events = inbox.handlers("Told", "Said") if inbox is not None else {}
        conn = await wsmvc.dial(
            self.app.url + query, {"app": events}, headers=headers, timeout=WAIT, ask_timeout=WAIT
        )
        self.clients.append(conn)
        return conn

    async def user(self, name: str, groups: str = "", inbox: Inbox | None = None) -> NSConn:
        """A tab of ``name``, connected to namespace ``app`` (token in the header)."""
        bearer = {"Authorization": f"Bearer {self.token(name, groups)}"}
        conn = await self.dial(bearer, inbox=inbox)
        return await conn.connect("app", timeout=WAIT)


@pytest.fixture
async def auth(example: StartExample) -> AsyncIterator[Auth]:
    demo = Auth(example("auth", "--secret", SECRET))
    try:
        yield demo
    finally:
        for conn in demo.clients:
            await conn.close()


async def refused_status(auth: Auth, headers: Mapping[str, str] | None, query: str = "") -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await auth.dial(headers, query=query)
    return refused.value.status


async def test_no_token_or_a_bad_one_gets_401_before_any_websocket(auth: Auth) -> None:
    alice = auth.token("alice")
    payload, _, signature = alice.partition(".")
    bob_payload = auth.token("bob").partition(".")[0]
    assert await refused_status(auth, None) == 401
    for header in [
        "Bearer not-a-token",
        f"Bearer {auth.token('alice', secret='another-secret')}",  # signed with another key
        f"Bearer {bob_payload}.{signature}",  # someone else's name under alice's signature
        f"Basic {alice}",  # not a bearer token
        "Bearer ",
    ]:
        assert await refused_status(auth, {"Authorization": header}) == 401, header
    bad_query = "?X-Websocket-Header-Authorization=" + quote("Bearer forged.token")
    assert await refused_status(auth, None, bad_query) == 401

    # What any HTTP client sees: 401 with a challenge, and no upgrade.
    async with aiohttp.ClientSession() as http, http.get(auth.app.http + "/ws") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert await response.text() == "a valid bearer token is required\n"
    # neffos.js probes the endpoint with HEAD (no headers) before reconnecting: answered.
    async with aiohttp.ClientSession() as http, http.head(auth.app.http + "/ws") as response:
        assert response.status == 204
    # The token checked out, the connection works with the same header value.
    conn = await auth.dial({"Authorization": f"Bearer {payload}.{signature}"})
    assert conn.id == "alice"


async def test_the_connection_id_is_the_user_whether_the_token_is_a_header_or_a_query(
    auth: Auth,
) -> None:
    by_header = await auth.dial({"Authorization": f"Bearer {auth.token('alice', 'staff')}"})
    assert by_header.id == "alice"
    ns = await by_header.connect("app", timeout=WAIT)
    assert (await ns.ask("OnWhoami", timeout=WAIT)).text == "alice [staff]"

    # A browser's neffos.js sends its `headers` option as query parameters (key matched
    # case-insensitively, like wsmvc's own conversion).
    for key in ["X-Websocket-Header-Authorization", "x-websocket-header-authorization"]:
        query = f"?{key}=" + quote(f"Bearer {auth.token('bob')}")
        by_query = await auth.dial(None, query=query)
        assert by_query.id == "bob"
        ns = await by_query.connect("app", timeout=WAIT)
        assert (await ns.ask("OnWhoami", timeout=WAIT)).text == "bob []"


async def test_tell_reaches_every_tab_of_one_user_and_nobody_else(auth: Auth) -> None:
    bob_tab1, bob_tab2, carol_inbox = Inbox(), Inbox(), Inbox()
    await auth.user("bob", inbox=bob_tab1)
    # Bob's second tab is a browser one: the token comes in the query.
    query = "?X-Websocket-Header-Authorization=" + quote(f"Bearer {auth.token('bob')}")
    second = await auth.dial(None, query=query, inbox=bob_tab2)
    await second.connect("app", timeout=WAIT)
    carol = await auth.user("carol", inbox=carol_inbox)
    alice_inbox = Inbox()
    alice = await auth.user("alice", inbox=alice_inbox)

    assert (await alice.ask("OnTell", "bob:psst", timeout=WAIT)).text == "told bob (2 tabs)"
    assert (await bob_tab1.next("Told")).text == "alice: psst"
    assert (await bob_tab2.next("Told")).text == "alice: psst"

    assert (await carol.ask("OnTell", "alice:hi", timeout=WAIT)).text == "told alice (1 tab)"
    assert (await alice_inbox.next("Told")).text == "carol: hi"
    # Each message reached its user only: had the first reached Carol or Alice, it would
    # have come before the second (one connection's messages arrive in order).
    assert carol_inbox.pending("Told") == alice_inbox.pending("Told") == 0
    assert bob_tab1.pending("Told") == bob_tab2.pending("Told") == 0

    with pytest.raises(EventError, match=r"^dave is not online$"):
        await alice.ask("OnTell", "dave:hello?", timeout=WAIT)
    with pytest.raises(EventError, match=r"^tell as <user>:<text>$"):
        await alice.ask("OnTell", "no separator", timeout=WAIT)


async def test_rooms_are_guarded_by_on_room_join(auth: Auth) -> None:
    alice_inbox, bob_inbox, erin_inbox = Inbox(), Inbox(), Inbox()
    alice = await auth.user("alice", inbox=alice_inbox)
    bob = await auth.user("bob", "staff", inbox=bob_inbox)
    erin = await auth.user("erin", "staff,ops", inbox=erin_inbox)

    with pytest.raises(EventError, match=r"^room 'staff' is for staff only$"):
        await alice.join_room("staff", timeout=WAIT)
    assert "staff" not in alice.rooms
    assert (await alice.join_room("general", timeout=WAIT)).name == "general"
    bob_staff = await bob.join_room("staff", timeout=WAIT)
    await erin.join_room("staff", timeout=WAIT)
    await erin.join_room("general", timeout=WAIT)

    bob_staff.emit("OnSay", "staff meeting at 3")
    said = await erin_inbox.next("Said")
    assert (said.room, said.text) == ("staff", "bob: staff meeting at 3")
    general = alice.room("general")
    assert general is not None
    general.emit("OnSay", "hello all")
    said = await erin_inbox.next("Said")
    assert (said.room, said.text) == ("general", "alice: hello all")
    # Bob is in staff only, Alice in general only; neither heard the other room.
    assert bob_inbox.pending("Said") == alice_inbox.pending("Said") == 0


async def test_a_client_refused_from_a_room_cannot_talk_into_it(auth: Auth) -> None:
    erin_inbox = Inbox()
    erin = await auth.user("erin", "staff", inbox=erin_inbox)
    await erin.join_room("staff", timeout=WAIT)
    # A hand-written client ignores the refusal and tags a message with the room anyway.
    headers = {"Authorization": f"Bearer {auth.token('mallory')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(auth.app.url, headers=headers) as ws,
    ):
        await ws.send_str("M")
        assert await ws.receive_str(timeout=WAIT) == "Amallory"
        await ws.send_str("$1;app;;_OnNamespaceConnect;0;0;")
        assert await ws.receive_str(timeout=WAIT) == "$1;;;;;;"
        await ws.send_str("$2;app;staff;_OnRoomJoin;0;0;")
        assert await ws.receive_str(timeout=WAIT) == (
            "$2;app;staff;_OnRoomJoin;1;0;room 'staff' is for staff only"
        )
        await ws.send_str("$3;app;staff;OnSay;0;0;I am staff, honest")
        await ws.send_str("$4;app;;OnSay;0;0;no room at all")
        # The server refuses both. The first is tagged with a room the connection never
        # joined, where nothing may be written: its ask ends with the known error
        # "bad room" instead of the handler's text; the second is answered in the namespace.
        assert await ws.receive_str(timeout=WAIT) == "$3;app;staff;OnSay;1;0;bad room"
        assert await ws.receive_str(timeout=WAIT) == "$4;app;;OnSay;1;0;join the room first"
    assert erin_inbox.pending("Said") == 0


@pytest.mark.interop  # Node + npm neffos.js/ws: run by tox -e interop
async def test_neffos_js_with_a_header_a_query_token_and_none(auth: Auth, node: Node) -> None:
    url = auth.app.url
    bob = auth.token("bob", "staff")
    refused = await asyncio.to_thread(node.run, "auth.mjs", "none", url)
    assert refused["dial"] == {"rejected": "Unexpected server response: 401"}

    browser = await asyncio.to_thread(node.run, "auth.mjs", "query", url, auth.token("carol"))
    assert browser["connected"] == {"id": "carol"}
    assert browser["whoami"] == {"body": "carol []"}
    assert browser["join_staff"] == {"rejected": "room 'staff' is for staff only"}
    assert browser["join_general"] == {"resolved": "general"}

    # Node sends real headers; the test tells Bob something from a Python client.
    scenario = node.start("auth.mjs", "header", url, bob)
    try:
        steps = await asyncio.to_thread(scenario.until, "ready")
        assert steps["connected"] == {"id": "bob"}
        assert steps["whoami"] == {"body": "bob [staff]"}
        assert steps["join_staff"] == {"resolved": "staff"}
        alice = await auth.user("alice")
        assert (await alice.ask("OnTell", "bob:from python", timeout=WAIT)).text == (
            "told bob (1 tab)"
        )
        steps = await asyncio.to_thread(scenario.finish)
    finally:
        scenario.close()
    assert steps["told"] == {"body": "alice: from python", "namespace": "app"}


async def test_sigint_closes_clients_with_1001_and_exits_cleanly(auth: Auth) -> None:
    ns = await auth.user("alice")
    stdout = await asyncio.to_thread(auth.app.stop, signal.SIGINT)
    await asyncio.wait_for(ns.conn.wait_closed(), WAIT)
    assert ns.conn.close_code == 1001
    assert stdout == ""
