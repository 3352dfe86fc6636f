"""A fake Discord on 127.0.0.1 for the unmodified discord.py client: REST API v10 and a gateway.

It speaks just enough of Discord for a bot that answers messages, slash commands and buttons:
HELLO/IDENTIFY/READY/GUILD_CREATE, heartbeats, RESUME with replay of missed events, message and
interaction events; REST for login, command sync, messages, interaction callbacks, webhook edits
and follow-ups. Every REST request is recorded (method, path, JSON body, time) for assertions.

It is sharded as Discord is: GET /gateway/bot recommends `shards`; each gateway connection
IDENTIFYs as `[shard_id, shard_count]` (none means `[0, 1]`) and gets a READY listing only its
guilds, then their GUILD_CREATEs; a guild's events go to every connection whose shard is
`(guild_id >> 22) % shard_count`, direct messages to shard 0. `add_guild(shard=...)` makes a
guild that lands on a given shard.

The server runs in its own thread and event loop, so the bot's loop is measured from outside.
Tests drive it with plain (thread-safe) methods: `say`, `slash`, `click`, `drop`, `wait_for`.

    fake = FakeDiscord().start()
    with fake.redirect():          # discord.py's REST base URL and gateway now point here
        ...run a bot with token fake.token...
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

log = logging.getLogger("fakediscord")

DISCORD_EPOCH = 1420070400000
EPHEMERAL = 64
LOADING = 128
MEMBER_PERMISSIONS = 2248473465835073  # an ordinary member's: no Manage Server, no Administrator
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3


@dataclass
class Request:
    """One REST call the client made."""

    method: str
    path: str  # after /api/v10, e.g. /channels/123/messages
    query: dict
    body: Any
    at: float
    status: int = 200
    response: Any = None


@dataclass
class Interaction:
    """An interaction the fake sent, and what the bot did with it."""

    id: int
    token: str
    payload: dict
    sent_at: float
    callback: dict | None = None
    callback_at: float | None = None
    original_id: int | None = None


@dataclass
class Session:
    """One IDENTIFYed gateway session: its shard, its socket while connected, its events."""

    id: str
    shard: tuple[int, int] = (0, 1)  # (shard id, shard count)
    seq: int = 0
    events: list[dict] = field(default_factory=list)  # every dispatch, for RESUME replays
    ws: web.WebSocketResponse | None = None
    request: web.Request | None = None

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def receives(self, guild_id: int | None) -> bool:
        """Whether Discord routes this guild's events (None: a DM's) to this session."""
        shard_id, count = self.shard
        return shard_id == (0 if guild_id is None else (guild_id >> 22) % count)


def _iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(t or time.time(), UTC).isoformat()


class FakeDiscord:
    """The fake server: a guild with two text channels (more guilds on request, one channel
    each), a bot user and as many humans as asked."""

    def __init__(self, *, token: str = "fake-bot-token", heartbeat_ms: int = 1000,
                 shards: int = 1):
        self.token = token
        self.heartbeat_ms = heartbeat_ms
        self.shard_count = shards  # what GET /gateway/bot recommends
        self._counter = itertools.count(1)
        self.app_id = self.bot_id = self.snowflake()
        self.guild_id = self.snowflake()
        self.general = self.snowflake()
        self.other = self.snowflake()
        self.channels: dict[int, tuple[int, str]] = {self.general: (self.guild_id, "general"),
                                                     self.other: (self.guild_id, "other")}
        self.bot_role = self.snowflake()
        self.librarian_role = self.snowflake()  # a plain role, for admin-role tests
        self.bot_user = {"id": str(self.bot_id), "username": "citebot", "discriminator": "0",
                         "global_name": "citebot", "avatar": None, "bot": True,
                         "verified": True, "flags": 0, "mfa_enabled": False}
        self.users: dict[int, dict] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.messages: dict[int, dict] = {}
        self.commands: dict[int | None, list[dict]] = {}  # guild id (None: global) -> commands
        self.interactions: dict[str, Interaction] = {}
        self.requests: list[Request] = []
        self.heartbeats: list[float] = []  # when each heartbeat arrived (each is ACKed at once)
        self.identifies = 0
        self.identified: list[tuple[int, int]] = []  # the shard of each IDENTIFY, in order
        self.resumes = 0
        self.sessions: list[Session] = []
        self._send_lock: asyncio.Lock | None = None
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- ids and objects -------------------------------------------------------------------------

    def snowflake(self, *, shard: tuple[int, int] | None = None) -> int:
        """A new id; with shard=(id, count), one whose (id >> 22) % count is that shard."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH
        if shard is not None:
            ms -= (ms - shard[0]) % shard[1]
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)

    def add_guild(self, *, shard: int = 0) -> int:
        """Another guild, with one text channel, on a given shard of shard_count; its id."""
        guild_id = self.snowflake(shard=(shard, self.shard_count))
        self.channels[self.snowflake()] = (guild_id, "general")
        return guild_id

    @property
    def guild_ids(self) -> list[int]:
        return list(dict.fromkeys(g for g, _ in self.channels.values()))

    def general_of(self, guild_id: int) -> int:
        """The guild's first text channel."""
        return next(c for c, (g, _) in self.channels.items() if g == guild_id)

    def user(self, user_id: int | None = None, name: str | None = None) -> dict:
        """A human user (created on first use)."""
        user_id = user_id or self.snowflake()
        if user_id not in self.users:
            self.users[user_id] = {"id": str(user_id), "username": name or f"user{len(self.users)}",
                                   "discriminator": "0", "global_name": name, "avatar": None}
        return self.users[user_id]

    def _member(self, user: dict, roles: Sequence[int] = (),
                permissions: int = MEMBER_PERMISSIONS) -> dict:
        # permissions: what Discord resolves for the member in the channel (interactions only)
        return {"user": user, "roles": [str(r) for r in roles], "joined_at": _iso(), "deaf": False,
                "mute": False, "flags": 0, "nick": None, "avatar": None, "pending": False,
                "premium_since": None, "permissions": str(permissions)}

    def _channel(self, channel_id: int) -> dict:
        if channel_id in self.dm_channels.values():
            uid = next(u for u, c in self.dm_channels.items() if c == channel_id)
            return {"id": str(channel_id), "type": 1, "last_message_id": None,
                    "recipients": [self.users[uid]]}
        guild_id, name = self.channels[channel_id]
        return {"id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": name,
                "position": 0 if name == "general" else 1, "permission_overwrites": [],
                "nsfw": False, "parent_id": None, "topic": None, "last_message_id": None,
                "rate_limit_per_user": 0}

    def dm_channel(self, user_id: int) -> int:
        self.user(user_id)
        return self.dm_channels.setdefault(user_id, self.snowflake())

    def guild_of(self, channel_id: int) -> int | None:
        """The guild of a channel; None for a DM channel."""
        return self.channels[channel_id][0] if channel_id in self.channels else None

    def _guild(self, guild_id: int) -> dict:
        everyone = {"id": str(guild_id), "name": "@everyone", "permissions": "1071698660929",
                    "position": 0, "color": 0, "hoist": False, "managed": False,
                    "mentionable": False, "flags": 0}
        bot_role = {**everyone, "id": str(self.bot_role), "name": "citebot", "position": 1,
                    "managed": True, "tags": {"bot_id": str(self.bot_id)}}
        librarian = {**everyone, "id": str(self.librarian_role), "name": "Librarian",
                     "position": 2}
        return {"id": str(guild_id), "name": "Fake guild", "icon": None, "owner_id": "1",
                "unavailable": False, "member_count": 2, "large": False, "joined_at": _iso(),
                "features": [], "roles": [everyone, bot_role, librarian], "emojis": [],
                "stickers": [],
                "channels": [self._channel(c) for c, (g, _) in self.channels.items()
                             if g == guild_id],
                "threads": [], "members": [self._member(self.bot_user, [self.bot_role])],
                "presences": [], "voice_states": [], "preferred_locale": "en-US",
                "premium_tier": 0, "verification_level": 0, "default_message_notifications": 0,
                "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0}

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> FakeDiscord:
        """Serve in a background thread; returns once the port is bound."""
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=main, name="fakediscord", daemon=True).start()
        ready.wait(10)
        return self

    async def _serve(self) -> None:
        self._send_lock = asyncio.Lock()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop:
            self.call(self._runner.cleanup())
            self._loop.call_soon_threadsafe(self._loop.stop)

    def call(self, coro, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop from a test thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @contextmanager
    def redirect(self) -> Iterator[FakeDiscord]:
        """Point discord.py at this server (REST base and default gateway) for the duration."""
        old = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        Route.BASE = self.base_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url + "/")
        try:
            yield self
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = old

    # -- gateway ---------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}}))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                op = data.get("op")
                if op == 1:
                    self.heartbeats.append(time.monotonic())
                    await self._send(ws, {"op": 11})
                elif op == 2:
                    await self._identify(ws, request, data["d"])
                elif op == 6:
                    await self._resume(ws, request, data["d"])
        finally:
            for session in self.sessions:
                if session.ws is ws:
                    session.ws = None
        return ws

    async def _send(self, ws: web.WebSocketResponse, payload: dict) -> None:
        async with self._send_lock:
            await ws.send_str(json.dumps(payload))

    async def _identify(self, ws: web.WebSocketResponse, request: web.Request, d: dict) -> None:
        if d.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        shard_id, count = d.get("shard") or (0, 1)
        if not 0 <= shard_id < count:
            await ws.close(code=4010, message=b"Invalid shard.")
            return
        self.identifies += 1
        self.identified.append((shard_id, count))
        session = Session(id=f"session{self.snowflake()}", shard=(shard_id, count), ws=ws,
                          request=request)
        self.sessions.append(session)
        guilds = [g for g in self.guild_ids if session.receives(g)]
        await self._send_event(session, "READY", {
            "v": 10, "user": self.bot_user, "session_id": session.id,
            "resume_gateway_url": self.gateway_url, "shard": [shard_id, count],
            "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
            "application": {"id": str(self.app_id), "flags": 0}, "private_channels": [],
            "relationships": [], "presences": [], "guild_join_requests": [],
            "geo_ordered_rtc_regions": [], "user_settings": {}, "_trace": ["fake"]})
        for g in guilds:
            await self._send_event(session, "GUILD_CREATE", self._guild(g))
        self._notify()

    async def _resume(self, ws: web.WebSocketResponse, request: web.Request, d: dict) -> None:
        session = next((s for s in self.sessions if s.id == d.get("session_id")), None)
        if session is None:
            await self._send(ws, {"op": 9, "d": False})
            return
        self.resumes += 1
        session.ws, session.request = ws, request
        for event in session.events:
            if event["s"] > (d.get("seq") or 0):
                await self._send(ws, event)
        await self._send_event(session, "RESUMED", {"_trace": ["fake"]})
        self._notify()

    async def _dispatch(self, name: str, data: dict, guild_id: int | None = None) -> None:
        """Send a guild's event (None: a DM's) to the sessions of its shard."""
        for session in self.sessions:
            if session.receives(guild_id):
                await self._send_event(session, name, data)

    async def _send_event(self, session: Session, name: str, data: dict) -> None:
        """Send an event now, or keep it for the RESUME if the client is away."""
        session.seq += 1
        event = {"op": 0, "t": name, "s": session.seq, "d": data}
        session.events.append(event)
        if session.connected:
            try:
                await self._send(session.ws, event)
            except (ConnectionError, RuntimeError):
                pass  # replayed on RESUME

    def drop(self, code: int | None = 4000, *, shard: int = 0) -> None:
        """Cut a shard's gateway connection: a close frame with code, or (None) an abrupt TCP
        reset."""
        async def cut() -> None:
            session = next((s for s in self.sessions if s.shard[0] == shard and s.connected),
                           None)
            if session is None:
                return
            ws, req = session.ws, session.request
            session.ws = None
            if code is None:
                req.transport.abort()
            else:
                await ws.close(code=code, message=b"fake drop")
        self.call(cut())

    @property
    def connected(self) -> bool:
        """Every shard's latest session is connected."""
        latest = {s.shard: s for s in self.sessions}
        return bool(latest) and all(s.connected for s in latest.values())

    # -- events the tests cause -------------------------------------------------------------------

    def say(self, content: str, *, user_id: int, channel_id: int | None = None,
            dm: bool = False) -> int:
        """A user posts a message; returns its id."""
        user = self.user(user_id)
        channel_id = self.dm_channel(user_id) if dm else (channel_id or self.general)
        mentioned = {int(m) for m in re.findall(r"<@!?(\d+)>", content)}
        mentions = [{**u, "member": {k: v for k, v in self._member(u).items() if k != "user"}}
                    for u in [self.bot_user, *self.users.values()] if int(u["id"]) in mentioned]
        msg = {"id": str(self.snowflake()), "channel_id": str(channel_id), "author": user,
               "content": content, "timestamp": _iso(), "edited_timestamp": None, "tts": False,
               "mention_everyone": bool(re.search(r"@(everyone|here)", content)),
               "mentions": mentions, "mention_roles": re.findall(r"<@&(\d+)>", content),
               "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": 0,
               "components": []}
        guild_id = self.guild_of(channel_id)
        if guild_id is not None:
            msg["guild_id"] = str(guild_id)
            msg["member"] = {k: v for k, v in self._member(user).items() if k != "user"}
        self.messages[int(msg["id"])] = msg
        self.call(self._dispatch("MESSAGE_CREATE", msg, guild_id))
        return int(msg["id"])

    def _interaction(self, kind: int, data: dict, *, user_id: int, channel_id: int | None,
                     dm: bool, message: dict | None = None, roles: Sequence[int] = (),
                     permissions: int = MEMBER_PERMISSIONS) -> Interaction:
        user = self.user(user_id)
        iid = self.snowflake()
        token = f"itoken-{iid}"
        channel_id = self.dm_channel(user_id) if dm else (channel_id or self.general)
        guild_id = self.guild_of(channel_id)
        payload = {"id": str(iid), "application_id": str(self.app_id), "type": kind,
                   "token": token, "version": 1, "data": data, "channel_id": str(channel_id),
                   "channel": self._channel(channel_id), "locale": "en-US",
                   "app_permissions": "2248473465835073", "entitlements": [],
                   "attachment_size_limit": 26214400, "context": 1 if dm else 0,
                   "authorizing_integration_owners": {"0" if not dm else "1": str(
                       guild_id if not dm else user_id)}}
        if dm:
            payload["user"] = user
        else:
            payload.update(guild_id=str(guild_id), guild_locale="en-US",
                           member=self._member(user, roles, permissions))
        if message is not None:
            payload["message"] = message
        inter = Interaction(iid, token, payload, time.monotonic())
        self.interactions[token] = inter
        self.call(self._dispatch("INTERACTION_CREATE", payload, guild_id))
        return inter

    def slash(self, name: str, *, user_id: int, channel_id: int | None = None, dm: bool = False,
              roles: Sequence[int] = (), permissions: int = MEMBER_PERMISSIONS,
              **options: Any) -> Interaction:
        """A user runs a slash command the bot registered; roles and permissions are the
        member's (the default permissions are an ordinary member's: no Manage Server)."""
        guild_cmds = [] if dm else self.commands.get(self.guild_of(channel_id or self.general),
                                                     [])
        cmd = next((c for c in guild_cmds + self.commands.get(None, []) if c["name"] == name),
                   None)
        if cmd is None:
            raise LookupError(f"the bot registered no /{name}")
        types = {o["name"]: o["type"] for o in cmd.get("options", [])}
        data = {"id": cmd["id"], "name": name, "type": 1,
                "options": [{"name": k, "type": types[k], "value": v} for k, v in options.items()]}
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return self._interaction(2, data, user_id=user_id, channel_id=channel_id, dm=dm,
                                 roles=roles, permissions=permissions)

    def click(self, message_id: int, custom_id: str, *, user_id: int) -> Interaction:
        """A user presses a button under a message the bot sent."""
        msg = self.messages[message_id]
        dm = "guild_id" not in msg
        return self._interaction(3, {"custom_id": custom_id, "component_type": 2},
                                 user_id=user_id, channel_id=int(msg["channel_id"]), dm=dm,
                                 message=msg)

    # -- REST ------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json" and raw:
                body = json.loads(raw)
            elif request.content_type.startswith("multipart/"):
                body = {"multipart": True}
        rec = Request(request.method, path, dict(request.query), body, time.monotonic())
        events: list[tuple[str, dict, int | None]] = []
        status, response = self._route(request, rec, events)
        rec.status, rec.response = status, response
        with self._changed:
            self.requests.append(rec)
            self._changed.notify_all()
        for name, data, guild_id in events:  # e.g. the bot's own message echoed back
            await self._dispatch(name, data, guild_id)
        if status == 204:
            return web.Response(status=204)
        # Exactly this content type: discord.py compares the header with "application/json".
        return web.Response(body=json.dumps(response).encode(), status=status,
                            headers={"Content-Type": "application/json"})

    def _route(self, request: web.Request, rec: Request,
               events: list[tuple[str, dict, int | None]]) -> tuple[int, Any]:
        m, p, body = rec.method, rec.path, rec.body or {}
        message = body.get("data") if p.endswith("/callback") else body
        if isinstance(message, dict) and (problem := invalid_message(message)):
            return 400, {"message": "Invalid Form Body", "code": 50035, "errors": problem}
        auth = request.headers.get("Authorization")
        if auth is not None and auth != f"Bot {self.token}":
            return 401, {"message": "401: Unauthorized", "code": 0}
        if (m, p) == ("GET", "/users/@me"):
            return (200, self.bot_user) if auth else (401, {"message": "401: Unauthorized",
                                                            "code": 0})
        if (m, p) == ("GET", "/oauth2/applications/@me"):
            return 200, {"id": str(self.app_id), "name": "citebot", "description": "",
                         "icon": None, "bot_public": True, "bot_require_code_grant": False,
                         "owner": self.user(1, "owner"), "verify_key": "0" * 64, "flags": 0,
                         "team": None, "summary": ""}
        if (m, p) == ("GET", "/gateway/bot"):
            return 200, {"url": self.gateway_url, "shards": self.shard_count,
                         "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}
        if match := re.fullmatch(r"/applications/(\d+)(?:/guilds/(\d+))?/commands", p):
            guild = int(match[2]) if match[2] else None
            if m == "PUT":
                self.commands[guild] = [
                    {**c, "id": str(self.snowflake()), "application_id": str(self.app_id),
                     "version": "1", "default_member_permissions": None, "type": c.get("type", 1),
                     **({"guild_id": str(guild)} if guild else {})} for c in body]
            return 200, self.commands.get(guild, [])
        if match := re.fullmatch(r"/channels/(\d+)", p):
            if int(match[1]) not in {*self.channels, *self.dm_channels.values()}:
                return 404, {"message": "Unknown Channel", "code": 10003}
            return 200, self._channel(int(match[1]))
        if re.fullmatch(r"/channels/(\d+)/typing", p):
            return 204, None
        if (m, p) == ("POST", "/users/@me/channels"):
            return 200, self._channel(self.dm_channel(int(body["recipient_id"])))
        if (match := re.fullmatch(r"/channels/(\d+)/messages", p)) and m == "POST":
            msg = self._new_message(int(match[1]), body)
            events.append(("MESSAGE_CREATE", msg, self.guild_of(int(match[1]))))
            return 200, msg
        if match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p):
            return self._callback(match[2], body)
        if match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", p):
            inter = self.interactions.get(match[2])
            mid = (inter.original_id if inter else None) if match[3] == "@original" \
                else int(match[3])
            if mid not in self.messages:
                return 404, {"message": "Unknown Message", "code": 10008}
            if m == "PATCH":
                self._edit(self.messages[mid], body)
            return 200, self.messages[mid]
        if (match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)", p)) and m == "POST":
            inter = self.interactions.get(match[2])
            if inter is None:
                return 404, {"message": "Unknown Webhook", "code": 10015}
            return 200, self._new_message(int(inter.payload["channel_id"]), body,
                                          interaction=inter)
        return 404, {"message": f"fake Discord has no {m} {p}", "code": 0}

    def _new_message(self, channel_id: int, body: dict, *, interaction: Interaction | None = None,
                     flags: int = 0) -> dict:
        msg = {"id": str(self.snowflake()), "channel_id": str(channel_id),
               "author": self.bot_user, "content": body.get("content") or "",
               "timestamp": _iso(), "edited_timestamp": None, "tts": False,
               "mention_everyone": False, "mentions": [], "mention_roles": [],
               "attachments": [], "embeds": body.get("embeds") or [], "pinned": False,
               "type": 19 if body.get("message_reference") else 0,
               "flags": body.get("flags", 0) | flags, "components": body.get("components") or []}
        if (guild_id := self.guild_of(channel_id)) is not None:
            msg["guild_id"] = str(guild_id)
        if body.get("message_reference"):
            msg["message_reference"] = body["message_reference"]
        if interaction is not None:
            msg.update(type=20, webhook_id=str(self.app_id), application_id=str(self.app_id))
        self.messages[int(msg["id"])] = msg
        return msg

    def _edit(self, msg: dict, body: dict) -> None:
        for key in ("content", "embeds", "components"):
            if key in body:
                msg[key] = body[key] if body[key] is not None else ("" if key == "content" else [])
        msg["flags"] = msg.get("flags", 0) & ~LOADING
        msg["edited_timestamp"] = _iso()

    def _callback(self, token: str, body: dict) -> tuple[int, Any]:
        inter = self.interactions.get(token)
        if inter is None:
            return 404, {"message": "Unknown interaction", "code": 10062}
        if inter.callback is not None:
            return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
        inter.callback, inter.callback_at = body, time.monotonic()
        kind, data = body["type"], body.get("data") or {}
        clicked = inter.payload.get("message")
        resource: dict = {"type": kind}
        if kind == 4:
            msg = self._new_message(int(inter.payload["channel_id"]), data, interaction=inter)
            inter.original_id = int(msg["id"])
            resource["message"] = msg
        elif kind == 5:
            msg = self._new_message(int(inter.payload["channel_id"]), data, interaction=inter,
                                    flags=LOADING)
            inter.original_id = int(msg["id"])
        elif kind in (6, 7) and clicked is not None:
            inter.original_id = int(clicked["id"])
            if kind == 7:
                self._edit(self.messages[inter.original_id], data)
                resource["message"] = self.messages[inter.original_id]
        else:
            return 400, {"message": f"bad callback type {kind}", "code": 50035}
        flags = self.messages[inter.original_id].get("flags", 0)
        return 200, {"interaction": {"id": str(inter.id), "type": inter.payload["type"],
                                     "response_message_id": str(inter.original_id),
                                     "response_message_loading": kind == 5,
                                     "response_message_ephemeral": bool(flags & EPHEMERAL)},
                     "resource": resource}

    # -- assertions ------------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Request], bool], timeout: float = 60,
                 start: int = 0) -> Request:
        """The first recorded request (from index start) matching predicate; waits for it."""
        deadline = time.monotonic() + timeout
        seen = start
        with self._changed:
            while True:
                for rec in self.requests[seen:]:
                    if predicate(rec):
                        return rec
                seen = len(self.requests)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching request recorded")
                self._changed.wait(left)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("condition not met")
                self._changed.wait(min(left, 0.05))

    def reply_to(self, message_id: int, timeout: float = 60) -> Request:
        """The bot's message replying to a user's message."""
        return self.wait_for(lambda r: r.method == "POST" and r.path.endswith("/messages")
                             and str((r.body or {}).get("message_reference", {}).get("message_id"))
                             == str(message_id), timeout)

    def original_edit(self, inter: Interaction, timeout: float = 60) -> Request:
        """The bot's edit of an interaction's original response."""
        return self.wait_for(lambda r: r.method == "PATCH"
                             and r.path.endswith(f"/{inter.token}/messages/@original"), timeout)

    def callback(self, inter: Interaction, timeout: float = 60) -> Request:
        return self.wait_for(lambda r: r.path.endswith(f"/{inter.token}/callback"), timeout)

    def message_bodies(self) -> list[dict]:
        """Every outgoing body that carries a message (content, embeds or components)."""
        out = []
        for r in list(self.requests):
            body = r.body if isinstance(r.body, dict) else {}
            data = body.get("data") if "/callback" in r.path else body
            if isinstance(data, dict) and {"content", "embeds", "components"} & data.keys():
                out.append(data)
        return out


def invalid_message(body: dict) -> str | None:
    """Why Discord would refuse this message body (its documented size limits), or None."""
    if len(body.get("content") or "") > 2000:
        return "content longer than 2000"
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        return "more than 10 embeds"
    total = 0
    for e in embeds:
        fields = e.get("fields", [])
        parts = [("title", e.get("title", ""), 256), ("description", e.get("description", ""),
                                                      4096),
                 ("footer", e.get("footer", {}).get("text", ""), 2048),
                 ("author", e.get("author", {}).get("name", ""), 256)]
        parts += [("field name", f.get("name", ""), 256) for f in fields]
        parts += [("field value", f.get("value", ""), 1024) for f in fields]
        for what, text, limit in parts:
            if len(text) > limit:
                return f"embed {what} longer than {limit}"
        if len(fields) > 25:
            return "more than 25 fields"
        if any(not f.get("name") or not f.get("value") for f in fields):
            return "empty field"
        total += sum(len(text) for _, text, _ in parts)
    if total > 6000:
        return "embeds longer than 6000 in all"
    for row in body.get("components") or []:
        for c in row.get("components", []):
            if len(c.get("custom_id", "")) > 100:
                return "custom_id longer than 100"
    return None


class BotThread:
    """Runs a discord.py client in its own thread and event loop (like a real process would)."""

    def __init__(self, client: discord.Client, token: str):
        self.client, self.token = client, token
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="bot", daemon=True)

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._run())
        except BaseException as exc:  # reported to the test
            self.error = exc
            log.exception("the bot stopped")
        finally:
            self.loop.close()

    async def _run(self) -> None:
        async with self.client:
            await self.client.start(self.token)

    def start(self, timeout: float = 60) -> BotThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.client.is_ready():
            if self.error or not self._thread.is_alive():
                raise RuntimeError(f"bot stopped: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("bot not ready")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30) -> None:
        if self.loop and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(timeout)
        self._thread.join(timeout)
