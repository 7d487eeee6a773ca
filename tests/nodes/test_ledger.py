"""The ledger: two ``vachat serve`` nodes on PostgreSQL + Redis, driven by ``vachat.client``
under faults, prove that nothing acknowledged is lost.

Every scenario keeps a ``Ledger``: each send has a unique ``clientMessageId``, each ack is
recorded, each receiver records the messages it was given (live frames and the catch-up of a
re-join alike: the client delivers both as ``NewMessage``). At the end, read from the database
through REST: acked − stored = ∅, nothing stored twice, and every receiver got exactly the
stored set, each message once, in seq order. The counts are printed (``pytest -s``) and are
part of every failure message.

Loopback only; each scenario is bounded in time (the gen_test timeout). Redis here is one the
test starts on a free port (``RedisServer``), so stopping it disturbs nobody else.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.client.helpers import TcpProxy
from vachat.client import Client, LiveConnection, NewMessage, Tokens
from vachat.client.live import Backoff
from vachat.testing import (
    ServerProcess, eventually, free_port, needs_postgres, needs_shared_services, open_websocket,
)

pytestmark = [needs_shared_services, needs_postgres]

# Reconnect quickly: the scenarios measure the server's recovery, not the client's patience.
QUICK = Backoff(initial=0.05, maximum=0.5)
# The promise: what a socket missed while Redis was away reaches it this soon after Redis returns.
REPLAY_WITHIN_SECS = 5.0
# Generous bounds for steps that take milliseconds when all is well (a loaded CI machine).
STEP_TIMEOUT = 30.0
# Frames a socket may send, far above what the senders here send: the rate limit is not under test.
NODE_ENV = {"WS_RATE_LIMIT": "100000/10s"}


# ---------------------------------------------------------------------------
# the fixtures: a Redis of our own, and the ledger
# ---------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` on a free loopback port that the test stops and starts at will."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is not installed (the ledger tests need it in CI)")
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await eventually(self._answers, timeout=STEP_TIMEOUT, what=f"redis-server on port {self.port}")

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.write(b"PING\r\n")
        answer = await reader.readline()
        writer.close()
        return answer.startswith(b"+PONG")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``RedisServer`` (not started: ``await own_redis.start()``), stopped at the end."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Ledger:
    """What was sent, acknowledged and received, to be checked against what is stored."""

    sent: list[str] = field(default_factory=list)  # clientMessageIds, in the order sent
    acked: dict[str, str] = field(default_factory=dict)  # clientMessageId → message id
    received: dict[str, list[Any]] = field(default_factory=dict)  # receiver → messages, in delivery order
    stored: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> str:
        stored_ids = [m["id"] for m in self.stored]
        parts = [f"sent={len(self.sent)}", f"acked={len(self.acked)}", f"stored={len(stored_ids)}",
                 f"stored twice={len(stored_ids) - len(set(stored_ids))}",
                 f"acked-not-stored={len(set(self.acked.values()) - set(stored_ids))}"]
        for name, messages in self.received.items():
            ids = [m.id for m in messages]
            parts.append(f"{name}: received={len(ids)} repeats={len(ids) - len(set(ids))} "
                         f"missing={len(set(stored_ids) - set(ids))}")
        parts += [f"{key}={value}" for key, value in self.notes.items()]
        return "ledger: " + ", ".join(parts)

    def check(self) -> None:
        print(self.counts())
        stored_ids = [m["id"] for m in self.stored]
        by_client_id = [m["clientMessageId"] for m in self.stored if m["clientMessageId"] in self.acked]
        assert set(self.acked.values()) - set(stored_ids) == set(), self.counts()
        assert len(stored_ids) == len(set(stored_ids)), self.counts()
        assert len(by_client_id) == len(set(by_client_id)), f"a clientMessageId stored twice; {self.counts()}"
        assert {m["clientMessageId"]: m["id"] for m in self.stored if m["clientMessageId"] in self.acked} \
            == self.acked, self.counts()
        for name, messages in self.received.items():
            ids = [m.id for m in messages]
            assert len(ids) == len(set(ids)), f"{name} got a message twice; {self.counts()}"
            assert set(ids) == set(stored_ids), f"{name} did not get exactly the stored set; {self.counts()}"
            seqs = [m.seq for m in messages]
            assert seqs == sorted(seqs), f"{name} got messages out of seq order; {self.counts()}"


def signed_in(server: ServerProcess | TcpProxy, user: str = "alice") -> Client:
    """A client of ``server`` (or of a proxy in front of one) as the test user ``user`` (the
    test authentication plugin)."""
    url = server.url if isinstance(server, TcpProxy) else server.base_url
    return Client(url, tokens=Tokens(access=f"test:{user}", refresh=""))


async def stored_messages(client: Client, conversation_id: str) -> list[dict[str, Any]]:
    """Every live message of the conversation, oldest first, as the database has it."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await client.messages(conversation_id, before=cursor, limit=200)
        items.extend(message.raw for message in page.items)
        if not page.next_cursor:
            return items[::-1]
        cursor = page.next_cursor


class Receiver:
    """A live connection joined to one conversation, recording every message it is given."""

    def __init__(self, name: str, live: LiveConnection, ledger: Ledger) -> None:
        self.name, self.live = name, live
        self.messages = ledger.received.setdefault(name, [])
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def joined(cls, name: str, server: ServerProcess | TcpProxy, conversation_id: str,
                     ledger: Ledger) -> "Receiver":
        live = signed_in(server).live(backoff=QUICK)
        await live.connect()
        receiver = cls(name, live, ledger)
        receiver._task = asyncio.ensure_future(receiver._record())
        await live.join(conversation_id)
        return receiver

    async def _record(self) -> None:
        async for event in self.live:
            if isinstance(event, NewMessage):
                self.messages.append(event.message)

    def has(self, message_ids: set[str]) -> bool:
        return message_ids <= {m.id for m in self.messages}

    async def close(self) -> None:
        await self.live.close()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=STEP_TIMEOUT)


async def send_all(live: LiveConnection, conversation_id: str, name: str, count: int, ledger: Ledger) -> None:
    """Send ``count`` messages one after the other, each acknowledged before the next."""
    for number in range(count):
        client_message_id = f"{name}-{number}"
        ledger.sent.append(client_message_id)
        message = await asyncio.wait_for(
            live.send(conversation_id, f"{name} #{number}", client_message_id=client_message_id), STEP_TIMEOUT)
        ledger.acked[client_message_id] = message.id


async def two_nodes(server_process: Any, env: dict[str, str],
                    second_env: dict[str, str] | None = None) -> tuple[ServerProcess, ServerProcess]:
    first = server_process({**NODE_ENV, **env})
    second = server_process({**NODE_ENV, **(env if second_env is None else second_env)})
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    return first, second


Target = ServerProcess | TcpProxy


@dataclass
class Scene:
    """One conversation, its receivers and senders, and the ledger of what they did."""

    owner: Client
    conversation_id: str
    receivers: list[Receiver]
    senders: list[LiveConnection]
    ledger: Ledger

    @classmethod
    async def open(cls, title: str, receivers: dict[str, Target], senders: list[Target]) -> "Scene":
        owner = signed_in(next(iter(receivers.values())))
        conversation_id = (await owner.create_conversation(f"ledger: {title}")).id
        ledger = Ledger()
        joined = [await Receiver.joined(name, target, conversation_id, ledger) for name, target in receivers.items()]
        lives = [signed_in(target).live(backoff=QUICK) for target in senders]
        for live in lives:
            await live.connect()
        return cls(owner, conversation_id, joined, lives, ledger)

    async def send(self, sender: int, tag: str, count: int) -> None:
        await send_all(self.senders[sender], self.conversation_id, tag, count, self.ledger)

    async def received_within(self, message_ids: set[str], timeout: float, what: str) -> float:
        """Seconds until every receiver has ``message_ids`` (fails past ``timeout``)."""
        began = time.monotonic()
        await eventually(lambda: all(r.has(message_ids) for r in self.receivers), timeout=timeout,
                         what=f"{what}; {self.ledger.counts()}")
        return round(time.monotonic() - began, 2)

    async def settle(self) -> None:
        """Read the stored set, wait until every receiver has it, and close everything."""
        self.ledger.stored = await stored_messages(self.owner, self.conversation_id)
        await self.received_within({m["id"] for m in self.ledger.stored}, STEP_TIMEOUT,
                                   "every stored message at every receiver")
        for receiver in self.receivers:
            await receiver.close()
        for live in self.senders:
            await live.close()

    def reconnects(self) -> list[int]:
        return [r.live.reconnects for r in self.receivers]


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=180)
async def test_redis_stopped_mid_traffic_and_restarted_loses_nothing(server_process, own_redis):
    await own_redis.start()
    first, second = await two_nodes(server_process, {"REDIS_URL": own_redis.url})
    scene = await Scene.open("Redis outage", {"receiver@node1": first, "receiver@node2": second}, [first, second])

    async def phase(tag: str, count: int, senders: tuple[int, ...] = (0, 1)) -> None:
        await asyncio.gather(*(scene.send(n, f"{tag}.node{n + 1}", count) for n in senders))

    await phase("before", 10)
    own_redis.stop()
    # Through node 2 only: node 2 stores, acks and delivers to its own sockets; node 1 hears
    # nothing, sees no later change that would reveal a gap, and its sockets stay connected.
    await phase("during", 16, senders=(1,))
    during = set(scene.ledger.acked.values())
    assert not scene.receivers[0].has(during), scene.ledger.counts()
    await own_redis.start()
    scene.ledger.notes["replayed within (s)"] = await scene.received_within(
        during, REPLAY_WITHIN_SECS, "the messages sent during the outage, on both nodes")
    await phase("after", 10)
    # No client action: the receivers never reconnected, the server replayed by itself.
    assert scene.reconnects() == [0, 0], scene.ledger.counts()
    await scene.settle()
    scene.ledger.check()


@pytest.mark.gen_test(timeout=180)
async def test_a_node_partitioned_from_redis_catches_up_both_ways(server_process, own_redis):
    await own_redis.start()
    async with TcpProxy(own_redis.port) as partition:
        first, second = await two_nodes(server_process, {"REDIS_URL": f"redis://127.0.0.1:{partition.port}/0"},
                                        {"REDIS_URL": own_redis.url})
        scene = await Scene.open("partition", {"receiver@node1": first, "receiver@node2": second}, [first, second])
        await scene.send(0, "before.node1", 5)
        partition.cut()  # node 1 alone loses Redis; node 2 and Redis carry on
        await scene.send(1, "cut.node2", 8)  # node 1 never hears these...
        await scene.send(0, "cut.node1", 8)  # ...nor node 2 these
        everything = set(scene.ledger.acked.values())
        partition.restore()
        scene.ledger.notes["replayed within (s)"] = await scene.received_within(
            everything, REPLAY_WITHIN_SECS, "the messages of the partition, on both nodes")
        assert scene.reconnects() == [0, 0], scene.ledger.counts()
        await scene.settle()
    scene.ledger.check()


@pytest.mark.gen_test(timeout=180)
async def test_sigterm_under_load_moves_every_client_to_the_other_node(server_process):
    first, second = await two_nodes(server_process, {})
    async with TcpProxy(first.port) as balancer:  # a load balancer, sending everyone to node 1
        scene = await Scene.open("SIGTERM", {"receiver@balancer": balancer, "receiver@node2": second},
                                 [balancer] * 3)
        ledger = scene.ledger
        watcher = await open_websocket(first.ws_url, {"Authorization": "Bearer test:alice"})
        await watcher.receive("ready")
        sending = [asyncio.ensure_future(scene.send(n, f"sender{n}", 40)) for n in range(3)]
        await eventually(lambda: len(ledger.acked) >= 30, timeout=STEP_TIMEOUT, what="traffic under way")
        first.terminate()
        balancer.target_port = second.port  # the balancer sees node 1 go and sends newcomers to node 2
        assert await watcher.closed(timeout=STEP_TIMEOUT) == (1001, "Server shutting down")
        ledger.notes["acked at SIGTERM"] = len(ledger.acked)
        await asyncio.wait_for(asyncio.gather(*sending), STEP_TIMEOUT * 2)
        assert await first.wait_exit() == 0
        # Everyone behind the balancer was moved: closed with 1001 and reconnected to node 2.
        moved = [scene.receivers[0].live, *scene.senders]
        assert [live.reconnects for live in moved] == [1] * len(moved), ledger.counts()
        assert scene.receivers[1].live.reconnects == 0, ledger.counts()
        await scene.settle()
    ledger.check()


# The AI scenario: replies a few words a second, so the node can be killed mid-reply; claims
# that live 3 s, so the test need not wait 30 (the promise holds for any AI_CLAIM_TTL under 60 s).
AI_ENV = {"AI_PROVIDER": "echo", "AI_ECHO_DELAY": "0.1", "AI_CLAIM_TTL": "3"}
# What the conversation promises after its node died: a new request accepted within this (s).
ACCEPTS_AGAIN_WITHIN_SECS = 60.0


@pytest.mark.gen_test(timeout=180)
async def test_sigkill_of_the_node_generating_leaves_the_reply_stored_as_interrupted(server_process):
    first, second = await two_nodes(server_process, AI_ENV)
    alice = {"Authorization": "Bearer test:alice"}
    owner = signed_in(second)
    conversation_id = (await owner.create_conversation("ledger: SIGKILL mid-reply")).id
    watcher = await open_websocket(second.ws_url, alice)
    await watcher.receive("ready")
    assert (await watcher.request("join-conversation", {"conversationId": conversation_id}))["type"] == "ack"
    ledger = Ledger()
    words = " ".join(f"word{n}" for n in range(200))
    question = await signed_in(first).send_message(conversation_id, words, requires_ai_response=True,
                                                   client_message_id="question.node1")
    ledger.sent.append("question.node1")
    ledger.acked["question.node1"] = question.id
    streamed: list[str] = []
    while len(streamed) < 4:  # node 1 is generating: its deltas reach node 2's socket
        delta = (await watcher.receive("ai-delta", timeout=STEP_TIMEOUT))["data"]
        reply_id = delta["messageId"]
        streamed.append(delta["delta"])
    assert (await watcher.receive("ai-typing", timeout=STEP_TIMEOUT))["data"]["typing"] is True
    first.kill()  # SIGKILL: no shutdown, no release of the claim
    killed = time.monotonic()

    async def accepted() -> Any:
        response = await second.fetch("/api/chat/message", method="POST", headers=alice, json={
            "conversationId": conversation_id, "content": "are you there?", "requiresAIResponse": True,
            "clientMessageId": "retry.node2"})
        assert response.code in (200, 201, 409), response.body  # 409 while the dead node's claim lives
        return response.code != 409 and response.data

    retry = await eventually(accepted, timeout=ACCEPTS_AGAIN_WITHIN_SECS, interval=0.25,
                             what="the conversation accepting a new AI request")
    ledger.sent.append("retry.node2")
    ledger.acked["retry.node2"] = retry["id"]
    ledger.notes["accepted again after (s)"] = round(time.monotonic() - killed, 1)
    # The interrupted reply: ai-done, the stored message, then typing off, to every socket.
    done = (await watcher.receive("ai-done", timeout=STEP_TIMEOUT))["data"]
    assert done == {"conversationId": conversation_id, "messageId": reply_id, "finishReason": "interrupted"}
    stored_reply = (await watcher.receive("new-message", timeout=STEP_TIMEOUT))["data"]
    if stored_reply["id"] == question.id:  # sent before the deltas
        stored_reply = (await watcher.receive("new-message", timeout=STEP_TIMEOUT))["data"]
    assert stored_reply["id"] == reply_id and stored_reply["role"] == "assistant"
    assert (await watcher.receive("ai-typing", timeout=STEP_TIMEOUT))["data"] == {
        "conversationId": conversation_id, "typing": False}
    ledger.stored = await stored_messages(owner, conversation_id)
    reply = next(m for m in ledger.stored if m["id"] == reply_id)
    text_so_far = "".join(streamed)
    ledger.notes["streamed chars"], ledger.notes["stored chars"] = len(text_so_far), len(reply["content"])
    # Stored: what was streamed (and at most the one delta recorded before the node died).
    assert reply["content"].startswith(text_so_far) and len(reply["content"]) < len(words), ledger.counts()
    assert reply["metadata"]["finishReason"] == "interrupted" and reply["type"] == "text", ledger.counts()
    assert reply["parentId"] == question.id, ledger.counts()
    # The new request's question follows the interrupted reply; its own reply runs on node 2.
    assert [m["id"] for m in ledger.stored].index(retry["id"]) > [m["id"] for m in ledger.stored].index(reply_id)
    assert (await watcher.receive("ai-typing", timeout=STEP_TIMEOUT))["data"]["typing"] is True
    print(ledger.counts())
    assert set(ledger.acked.values()) <= {m["id"] for m in ledger.stored}, ledger.counts()


def through(proxy: TcpProxy, database_url: str) -> str:
    """``database_url`` with its host and port replaced by the proxy's."""
    parts = urllib.parse.urlsplit(database_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.gen_test(timeout=180)
async def test_postgresql_unreachable_answers_503_and_recovers_without_a_restart(server_process, vachat_database_url):
    database_port = urllib.parse.urlsplit(vachat_database_url).port or 5432
    async with TcpProxy(database_port) as database:
        first, second = await two_nodes(server_process, {"DATABASE_URL": through(database, vachat_database_url)})
        scene = await Scene.open("database outage", {"receiver@node1": first, "receiver@node2": second},
                                 [first, second])
        ledger = scene.ledger
        watcher = await open_websocket(second.ws_url, {"Authorization": "Bearer test:alice"})
        await watcher.receive("ready")
        await asyncio.gather(scene.send(0, "before.node1", 5), scene.send(1, "before.node2", 5))

        database.cut()  # every node loses PostgreSQL (connections reset, new ones refused)
        sending = [asyncio.ensure_future(scene.send(n, f"during.node{n + 1}", 5)) for n in range(2)]
        body = {"conversationId": scene.conversation_id, "content": "over REST during the outage",
                "clientMessageId": "rest.node1"}
        ledger.sent.append("rest.node1")
        refused = await first.fetch("/api/chat/message", method="POST", json=body,
                                    headers={"Authorization": "Bearer test:alice"})
        assert refused.code == 503, refused.body
        assert refused.json["code"] == "UNAVAILABLE" and refused.headers.get("Retry-After") == "1", refused.body
        frame = await watcher.request("send-message", {**body, "clientMessageId": "socket.node2"})
        ledger.sent.append("socket.node2")
        assert frame["type"] == "error" and frame["data"]["code"] == "UNAVAILABLE", frame
        assert isinstance(frame["data"].get("retryAfter"), int) and frame["data"]["retryAfter"] >= 1, frame
        ledger.notes["acked while it was away"] = len(ledger.acked) - 10

        database.restore()  # no restart: the nodes reconnect by themselves
        await asyncio.wait_for(asyncio.gather(*sending), STEP_TIMEOUT * 2)
        for attempt_body, node in ((body, first), ({**body, "clientMessageId": "socket.node2"}, second)):
            retried = await node.fetch("/api/chat/message", method="POST", json=attempt_body,
                                       headers={"Authorization": "Bearer test:alice"})
            assert retried.code == 201, retried.body
            ledger.acked[attempt_body["clientMessageId"]] = retried.json["data"]["id"]
            again = await node.fetch("/api/chat/message", method="POST", json=attempt_body,
                                     headers={"Authorization": "Bearer test:alice"})
            assert again.code == 200 and again.json["data"]["id"] == retried.json["data"]["id"], again.body
        await scene.settle()
    ledger.check()
