"""The bot in shards: processes that each run a range of shards, sharing one index and one
store of bot data, answer every guild's question exactly once.

tests/fakediscord.py speaks Discord's sharded gateway (IDENTIFY with [shard_id, shard_count],
READY per shard with only its guilds, a guild's events to shard (guild_id >> 22) % count), and
the bots are real `citebot bot` processes with the unmodified discord.py client.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import discord
import pytest

from bot.config import DiscordConfig
from bot.discord_bot import CitebotBot, ShardedCitebotBot, check_shards, make_bot, syncs_commands
from index.errors import CitebotError

from .botharness import bot_process, postgres
from .fakediscord import BotThread, FakeDiscord

SHARDS = 4


def test_shard_settings_are_checked():
    assert check_shards(DiscordConfig(shard_count=4, shard_ids=[2, 3])) == [2, 3]
    assert check_shards(DiscordConfig(shard_count=4)) == []  # all four in this process
    for wrong in (DiscordConfig(shard_ids=[0]), DiscordConfig(shard_count=2, shard_ids=[2]),
                  DiscordConfig(shard_count=2, shard_ids=[1, 1]),
                  DiscordConfig(shard_count=-1)):
        with pytest.raises(CitebotError, match="discord.shard"):
            check_shards(wrong)
    assert syncs_commands(DiscordConfig()) and syncs_commands(DiscordConfig(shard_count=4))
    assert syncs_commands(DiscordConfig(shard_count=4, shard_ids=[0, 1]))
    assert not syncs_commands(DiscordConfig(shard_count=4, shard_ids=[2, 3]))
    sharded = make_bot(None, DiscordConfig(shard_count=4, shard_ids=[2, 3]))
    plain = make_bot(None, DiscordConfig())
    assert isinstance(sharded, ShardedCitebotBot) and sharded.shard_ids == [2, 3]
    assert type(plain) is CitebotBot


def test_the_fake_routes_each_guild_to_its_shard():
    """A stock AutoShardedClient asks GET /gateway/bot for the shard count, opens every shard,
    and sees each guild on the shard Discord's formula gives (checks the fake itself)."""
    fake = FakeDiscord(heartbeat_ms=500, shards=2)
    guilds = [fake.add_guild(shard=s) for s in (0, 1, 1)]
    client = discord.AutoShardedClient(intents=discord.Intents.default(),
                                       guild_ready_timeout=0.2)
    fake.start()
    try:
        with fake.redirect():
            runner = BotThread(client, fake.token).start()
            try:
                fake.wait_until(lambda: {g.id for g in client.guilds} >= set(guilds))
                assert client.shard_count == 2 and sorted(fake.identified) == [(0, 2), (1, 2)]
                for g in client.guilds:
                    assert g.shard_id == (g.id >> 22) % 2
                assert {(g >> 22) % 2 for g in guilds} == {0, 1}
            finally:
                runner.stop()
    finally:
        fake.stop()
    assert any(r.path == "/gateway/bot" for r in fake.requests)


@pytest.fixture(scope="module")
def postgres_url():
    with postgres() as url:
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_on_half_the_shards_answer_every_guild_once(backend, request, tmp_path,
                                                                   seeds_index):
    index = tmp_path / "index"
    shutil.copytree(seeds_index, index)  # one index, read by both processes
    data = (str(tmp_path / "bot.sqlite") if backend == "sqlite"
            else request.getfixturevalue("postgres_url"))
    fake = FakeDiscord(heartbeat_ms=500, shards=SHARDS)
    guilds = [fake.add_guild(shard=s) for s in range(SHARDS)] + [fake.guild_id]
    halves = [list(range(SHARDS // 2)), list(range(SHARDS // 2, SHARDS))]
    configs = []
    for n, ids in enumerate(halves):
        config = tmp_path / f"bot{n}.toml"
        config.write_text(f'[index]\ndir = "{index}"\nsources = []\n\n[discord]\n'
                          f'data = "{data}"\nshard_count = {SHARDS}\nshard_ids = {ids}\n'
                          "cooldown_questions = 0\n", encoding="utf-8")
        configs.append(config)
    fake.start()
    procs: list[subprocess.Popen] = []
    try:
        for n in range(len(halves)):  # one after the other, to see who identified what
            procs.append(bot_process(fake, configs[n], tmp_path / f"bot{n}.log"))
            wanted = [(i, SHARDS) for half in halves[:n + 1] for i in half]
            _wait(fake, lambda w=wanted: sorted(fake.identified) == w and fake.connected,
                  procs, tmp_path)
        assert fake.identifies == SHARDS  # no shard opened twice, none left out
        fake.wait_for(lambda r: r.method == "PUT" and r.path.endswith("/commands"))

        asked = {}
        for guild in guilds:
            user = fake.snowflake()
            asked[fake.say(f"<@{fake.bot_id}> who defended Darroch?", user_id=user,
                           channel_id=fake.general_of(guild))] = (guild, user)
        replies = {mid: fake.reply_to(mid, timeout=120) for mid in asked}
        time.sleep(1.0)  # time enough for a second answer to the same question, were it sent
        for mid, (guild, _) in asked.items():
            sent = [r for r in fake.requests if r.method == "POST" and str(
                (r.body or {}).get("message_reference", {}).get("message_id")) == str(mid)]
            assert len(sent) == 1, f"guild on shard {(guild >> 22) % SHARDS}: {len(sent)} replies"
            assert sent[0].status == 200 and "Darroch" in str(sent[0].body["embeds"])

        # The 👍 under each answer lands on the process of its guild's shard, which finds the
        # answer in the shared bot data (whichever process stored it) and thanks the voter.
        for mid, rec in replies.items():
            up = rec.body["components"][0]["components"][1]["custom_id"]
            click = fake.click(int(rec.response["id"]), up, user_id=asked[mid][1])
            assert "Thanks" in fake.callback(click, timeout=60).body["data"]["content"]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in procs]
        fake.stop()
    assert codes == [0, 0], [(tmp_path / f"bot{n}.log").read_text()[-2000:] for n in (0, 1)]
    from bot.botdata import open_bot_data

    stored = open_bot_data(data)
    votes = {(r["user_id"], r["vote"]) for r in stored.feedback()}
    stored.close()
    assert {(user, 1) for _, user in asked.values()} <= votes


def _wait(fake: FakeDiscord, condition, procs: list[subprocess.Popen], logs) -> None:
    """Wait for condition, failing early (with the bot's log) if a bot process exits."""
    deadline = time.monotonic() + 180
    while not condition():
        for n, proc in enumerate(procs):
            if proc.poll() is not None:
                raise AssertionError((logs / f"bot{n}.log").read_text()[-3000:])
        if time.monotonic() > deadline:
            raise TimeoutError(f"shards identified: {fake.identified}")
        time.sleep(0.1)


