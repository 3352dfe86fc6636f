"""Helpers shared by the benchmark scripts: paths, machine line, tables, timed subprocesses."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "bench" / "out"  # kept between runs (the SQuAD index); not committed
SEEDS = ROOT / "seeds"


def _shared_eval() -> Path:
    """../shared/eval beside this checkout (CI), else beside the main checkout when this is a
    git worktree; the first place when neither exists (callers check and skip)."""
    places = [ROOT.parent / "shared" / "eval"]
    git = ROOT / ".git"
    if git.is_file() and git.read_text().startswith("gitdir:"):  # .../main/.git/worktrees/NAME
        main = Path(git.read_text().split(":", 1)[1].strip()).parent.parent.parent
        places.append(main.parent / "shared" / "eval")
    return next((p for p in places if p.is_dir()), places[0])


SHARED_EVAL = _shared_eval()  # the shared evaluation sets, read-only; may be absent
SQUAD = SHARED_EVAL / "squad"
# Modules that must stay off the query path (the ONNX runtime is allowed there).
HEAVY = ("torch", "sentence_transformers", "transformers", "onnxruntime")


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine_line() -> str:
    """Date, usable cores, CPU and load average, without importing anything heavy."""
    from index.machine import cpu_model, usable_cpus

    return (f"{datetime.now().isoformat(timespec='minutes')}; {usable_cpus()} CPUs "
            f"({cpu_model()}); Python {platform.python_version()}; "
            f"load average {load_average()}")


def env() -> dict[str, str]:
    """The environment for child processes: offline, repository importable."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def citebot_cmd() -> list[str]:
    """The installed console script beside this Python, else the same entry point via -c."""
    script = Path(sys.executable).parent / "citebot"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())"]


def timed(cmd: Sequence[str], *, stdin: str | None = None, cwd: Path = ROOT,
          check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of a child process (output captured), and the finished process."""
    began = time.perf_counter()
    done = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, cwd=cwd,
                          env=env())
    seconds = time.perf_counter() - began
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def question_ms(st, questions: Sequence[str],
                others: dict[str, Callable[[str], object]] | None = None) -> dict[str, float]:
    """Median ms to embed one question alone with sentence-transformers, torch on 1 thread
    ("1", the reference: it suffers less when other processes share the cores) and on its
    default ("default"), interleaved per question with any other runs given; "threads" is
    torch's default."""
    import torch

    threads = torch.get_num_threads()

    def reference(q: str) -> object:
        return st.encode([q], normalize_embeddings=True, show_progress_bar=False)

    runs = {"1": (1, reference), "default": (threads, reference),
            **{name: (threads, run) for name, run in (others or {}).items()}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for q in questions:
            for name, (n, run) in runs.items():
                torch.set_num_threads(n)
                began = time.perf_counter()
                run(q)
                times[name].append(time.perf_counter() - began)
    finally:
        torch.set_num_threads(threads)
    return {"threads": threads, **{name: 1000 * median(t) for name, t in times.items()}}


def table(header: Sequence[str], rows: Sequence[Sequence[object]],
          align: str | None = None) -> str:
    """A markdown table; align is one letter per column, l or r (default: l then r)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_table(markdown: str) -> list[dict[str, str]]:
    """The first markdown table in a text, as one dict per row (for tests)."""
    lines = [ln.strip() for ln in markdown.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    block = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        block.append([c.strip() for c in ln.strip("|").split("|")])
    header, rows = block[0], block[2:]
    return [dict(zip(header, row, strict=True)) for row in rows]


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "**fail**")


def write_report(text: str, name: str, out: Path | None, smoke: bool) -> Path | None:
    """Print the report; write it to out, or to results/<name>.md for a full run."""
    print(text)
    target = out or (None if smoke else RESULTS / f"{name}.md")
    if target:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    return target


def seeds_config(index_dir: Path):
    """The Config the bot would use for an index of the seeds in index_dir."""
    from bot.config import Config, IndexConfig

    return Config(index=IndexConfig(dir=str(index_dir), sources=[str(SEEDS)]), base_dir=ROOT)


def build_index(index_dir: Path, sources: Sequence[str | Path], *,
                rebuild: bool = False) -> float:
    """`citebot --index DIR index build [--rebuild] SOURCES` as a new process; its seconds."""
    seconds, _ = timed([*citebot_cmd(), "--index", str(index_dir), "index", "build",
                        *(["--rebuild"] if rebuild else []), *map(str, sources)])
    return seconds


def index_ok(index_dir: Path) -> bool:
    """Whether citebot can use the index there: sound, and `search` and `ask` run on it."""
    if not (index_dir / "CURRENT").exists():
        return False
    ix = [*citebot_cmd(), "--index", str(index_dir)]
    return all(timed([*ix, *args], check=False)[1].returncode == 0
               for args in (["index", "check"], ["search", "what is it?", "-k", "1"],
                            ["ask", "what is it?"]))


def squad_questions(limit: int | None = None) -> list[str]:
    import json

    lines = (SQUAD / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["query"] for line in lines[:limit] if line.strip()]


# Questions about the seed articles, like the bot's users ask; benches and tests cycle them.
SEED_QUESTIONS = [
    "who defended Darroch?", "why did Darroch resign?", "what did the leaked cables say?",
    "what did Trump say about the ambassador?", "who is Kim Darroch?",
    "what did Theresa May say?", "when did Darroch resign?", "who leaked the memos?",
    "what did Darroch call the Trump administration?", "what did Boris Johnson say?",
    "who will replace Darroch?", "what did Jeremy Hunt say?", "what is the Mail on Sunday?",
    "how long was Darroch ambassador?", "what did Corbyn say?", "why was Trump angry?",
    "what is a diplomatic cable?", "who is the foreign secretary?", "what is inept?",
    "where did the leak come from?", "what happens to the leaker?", "how many articles?",
    "what did the White House say?", "who is Nigel Farage?", "what is the capital of France?",
]
SMOKE_QUESTIONS = SEED_QUESTIONS[:5]

