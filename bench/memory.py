"""Memory: the resident size of a process serving the seeds index, and whether torch got in.

    python bench/memory.py            # 50 questions each way; writes results/memory.md
    python bench/memory.py --smoke    # a few questions: checks that it all runs

Two serving processes, each new:
- library: opens the seeds index the way the bot does (`bot.app.make_library`, the same
  embedder) and answers the questions with `Library.ask`; it reports its own peak
  (`ru_maxrss`) and current (`VmRSS`) resident size.
- the real bot: `citebot bot` run by its own entry point, with discord.py's REST and gateway
  addresses pointed at tests/fakediscord.py on 127.0.0.1; the questions are mentions from new
  users, one after the other; VmRSS/VmHWM are read from /proc/PID/status after the answers,
  and /proc/PID/maps tells whether torch's libraries were loaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    HEAVY,
    SEED_QUESTIONS,
    SEEDS,
    SMOKE_QUESTIONS,
    build_index,
    env,
    machine_line,
    median,
    seeds_config,
    table,
    timed,
    verdict,
    write_report,
)

LIMIT_MB = 300
BOT = """\
import sys, yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route
Route.BASE = sys.argv[1]
DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2] + "/")
from bot.cli import main
sys.exit(main(sys.argv[3:]))
"""


def status_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of a process in MB (10^6 bytes)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024 / 1e6
    return out


def serve_library(index_dir: str, questions: list[str]) -> dict:
    """In a fresh process: open the library as the bot does, answer, report memory."""
    from bot.app import make_library

    started = status_mb()["VmRSS"]
    lib = make_library(seeds_config(Path(index_dir)))
    lib.snapshot()
    opened = status_mb()["VmRSS"]
    answered = sum(bool(lib.ask(q).answered) for q in questions)
    now = status_mb()
    return {"python_mb": started, "opened_mb": opened, "rss_mb": now["VmRSS"],
            "hwm_mb": now["VmHWM"], "anon_mb": now["RssAnon"], "file_mb": now["RssFile"],
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
            "answered": answered, "asked": len(questions), "embedder": lib.embedder.backend_used,
            "heavy": [m for m in HEAVY if m in sys.modules]}


def library_process(index_dir: Path, questions: list[str]) -> dict:
    code = ("import json, sys; from bench.memory import serve_library; "
            "print(json.dumps(serve_library(sys.argv[1], json.loads(sys.argv[2]))))")
    _, done = timed([sys.executable, "-c", code, str(index_dir), json.dumps(questions)])
    return json.loads(done.stdout.strip().splitlines()[-1])


def loaded_libraries(pid: int) -> list[str]:
    """Which heavy runtimes' shared libraries are mapped into a process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    marks = {"torch": "libtorch", "onnxruntime": "onnxruntime_pybind11_state"}
    return [name for name, mark in marks.items() if mark in maps]


def bot_process(index_dir: Path, questions: list[str], tmp: Path) -> dict:
    """The real `citebot bot` against the fake Discord; its memory after the answers."""
    from tests.fakediscord import FakeDiscord

    fake = FakeDiscord(heartbeat_ms=1000).start()
    config = tmp / "bot.toml"
    config.write_text(f"[discord]\nguild_id = {fake.guild_id}\n"
                      f"allowed_channels = [{fake.general}]\n"
                      f"cooldown_questions = 100000\ndata = {json.dumps(str(tmp / 'bot.sqlite'))}"
                      "\n", encoding="utf-8")
    log = (tmp / "bot.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", BOT, fake.base_url, fake.gateway_url,
         "--config", str(config), "--index", str(index_dir), "bot"],
        env={**env(), "DISCORD_TOKEN": fake.token}, cwd=tmp, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        began = time.perf_counter()
        fake.wait_until(lambda: fake.identifies >= 1 and fake.connected, timeout=180)
        ready_s = time.perf_counter() - began
        time.sleep(1.0)  # the guild and command sync settle
        idle = status_mb(proc.pid)
        seconds = []
        for q in questions:
            began = time.perf_counter()
            mid = fake.say(f"<@{fake.bot_id}> {q}", user_id=fake.snowflake())
            reply = fake.reply_to(mid, timeout=180)
            seconds.append(time.perf_counter() - began)
            if reply.status != 200:
                raise RuntimeError(f"the bot's reply failed: {reply.status}")
        after = status_mb(proc.pid)
        libs = loaded_libraries(proc.pid)
    except BaseException:
        log.flush()
        print((tmp / "bot.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        fake.stop()
    return {"ready_s": ready_s, "idle_mb": idle["VmRSS"], "rss_mb": after["VmRSS"],
            "hwm_mb": after["VmHWM"], "anon_mb": after["RssAnon"], "file_mb": after["RssFile"],
            "libs": libs, "asked": len(questions),
            "reply_median_s": median(seconds), "exit": proc.returncode}


def report(lib: dict, bot: dict | None, *, smoke: bool, note: str) -> str:
    def ok(mb: float) -> str:
        return "" if smoke else verdict(mb < LIMIT_MB)

    torch_lib = "torch" in lib["heavy"]
    rows = [
        [f"library process (`make_library`, {lib['asked']} × `Library.ask`): peak "
         "(ru_maxrss)", f"{lib['maxrss_mb']:.0f}", f"< {LIMIT_MB}", ok(lib["maxrss_mb"])],
        ["library process: current (VmRSS) after the questions", f"{lib['rss_mb']:.0f}",
         f"< {LIMIT_MB}", ok(lib["rss_mb"])],
        ["library process: of which anonymous / file-backed (RssAnon / RssFile)",
         f"{lib['anon_mb']:.0f} / {lib['file_mb']:.0f}", "", ""],
        ["library process: after imports / after opening the index",
         f"{lib['python_mb']:.0f} / {lib['opened_mb']:.0f}", "", ""],
    ]
    if bot:
        rows += [
            [f"`citebot bot` (fake Discord), {bot['asked']} mentions answered: peak (VmHWM)",
             f"{bot['hwm_mb']:.0f}", f"< {LIMIT_MB}", ok(bot["hwm_mb"])],
            ["`citebot bot`: current (VmRSS) after the answers", f"{bot['rss_mb']:.0f}",
             f"< {LIMIT_MB}", ok(bot["rss_mb"])],
            ["`citebot bot`: of which anonymous / file-backed (RssAnon / RssFile)",
             f"{bot['anon_mb']:.0f} / {bot['file_mb']:.0f}", "", ""],
            ["`citebot bot`: connected, before any question", f"{bot['idle_mb']:.0f}", "", ""],
        ]
    lines = [f"# Memory{' (smoke)' if smoke else ''}", "", machine_line(), "",
             f"Resident sizes in MB (10^6 bytes), {note}.", "",
             table(["process", "MB", "target", "result"], rows, "lrll"), "",
             f"- library process: {lib['answered']} of {lib['asked']} answered; heavy modules "
             f"imported: {', '.join(lib['heavy']) or 'none'}; torch imported: "
             f"{'**yes**' if torch_lib else 'no'}; embedding path {lib['embedder']}."]
    if bot:
        lines.append(f"- `citebot bot`: connected {bot['ready_s']:.1f} s after start; median "
                     f"reply {bot['reply_median_s']:.2f} s; runtimes mapped: "
                     f"{', '.join(bot['libs']) or 'none'}; torch loaded: "
                     f"{'**yes**' if 'torch' in bot['libs'] else 'no'}; exit code after "
                     f"SIGTERM {bot['exit']}.")
    else:
        lines.append("- `citebot bot` not run (--no-bot, or aiohttp missing).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--index", type=Path, help="an existing seeds index (default: build "
                        "one in a temporary folder)")
    parser.add_argument("--no-bot", action="store_true", help="skip the real bot process")
    parser.add_argument("--smoke", action="store_true", help="a few questions, for CI")
    parser.add_argument("--out", type=Path, help="markdown file (default for full runs: "
                        "bench/results/memory.md)")
    args = parser.parse_args(argv)
    questions = (SMOKE_QUESTIONS[:3] if args.smoke else
                 [SEED_QUESTIONS[i % len(SEED_QUESTIONS)] for i in range(args.questions)])
    with tempfile.TemporaryDirectory(prefix="citebot-memory-") as tmp:
        tmp_path = Path(tmp)
        index_dir = args.index
        note = f"seeds index in {index_dir}"
        if index_dir is None:
            index_dir = tmp_path / "index"
            build_index(index_dir, [SEEDS])
            note = "seeds index built by `citebot index build`"
        lib = library_process(index_dir, questions)
        bot = None
        if not args.no_bot:
            try:
                import aiohttp  # noqa: F401  (the fake Discord's server)
            except ImportError:
                args.no_bot = True
            else:
                bot = bot_process(index_dir, questions, tmp_path)
    text = report(lib, bot, smoke=args.smoke, note=note)
    write_report(text, "memory", args.out, args.smoke)
    return text


if __name__ == "__main__":
    main()
