"""Cold start: each command as a new process on an existing seeds index, against a reference.

    python bench/coldstart.py               # 7 interleaved rounds; writes results/coldstart.md
    python bench/coldstart.py --smoke       # 1 round, cheap reference: checks that it all runs

The reference is `python -c "import sentence_transformers"`, what any torch-based query path
pays before its first answer. Rounds are interleaved (each round runs every command once, in
rotating order), so load from other processes slows all alike; compare ratios, not seconds.
A second, separate run of each citebot command records which heavy modules it imported.

"Cold after idle": the VM pages memory out after ~1 minute idle. As root, the page cache is
dropped (`echo 3 > /proc/sys/vm/drop_caches`) before one `ask` and before one reference, which
is the worst case (nothing of Python, the venv or the model in memory); otherwise, or in
addition with --idle SECONDS, one `ask` runs after sleeping that long.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    HEAVY,
    SEEDS,
    build_index,
    citebot_cmd,
    machine_line,
    median,
    table,
    timed,
    verdict,
    write_report,
)

QUESTION = "who defended Darroch?"
TARGET = 0.2  # search and ask: at most this fraction of the reference
MARK = "citebot-bench-modules:"
# The console script's own code, plus a report of the heavy modules loaded at exit.
CHECK = ("import atexit, json, sys\n"
         f"heavy = {HEAVY!r}\n"
         f"atexit.register(lambda: print({MARK!r}, json.dumps([m for m in heavy "
         "if m in sys.modules]), file=sys.stderr))\n"
         "sys.argv = ['citebot', *json.loads(sys.argv[1])]\n"
         "from bot.cli import main\n"
         "sys.exit(main())\n")


@dataclass
class Row:
    name: str
    label: str
    seconds: list[float] = field(default_factory=list)
    modules: list[str] | None = None
    target: float | None = None


def commands(index_dir: Path, reference: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (label, argv) for every timed process; the first is the reference."""
    ix = ["--index", str(index_dir)]
    return {
        "reference": (f'`python -c "import {reference}"` (reference)',
                      [sys.executable, "-c", f"import {reference}"]),
        "search": (f'`citebot search "{QUESTION}"`', [*citebot_cmd(), *ix, "search", QUESTION]),
        "ask": (f'`citebot ask "{QUESTION}"`', [*citebot_cmd(), *ix, "ask", QUESTION]),
        "help": ("`citebot --help`", [*citebot_cmd(), "--help"]),
        "list": ("`citebot index list`", [*citebot_cmd(), *ix, "index", "list"]),
    }


def heavy_modules(argv: list[str], cwd: Path) -> list[str]:
    """The heavy modules a citebot command (argv after `citebot`) has imported when it exits."""
    _, done = timed([sys.executable, "-c", CHECK, json.dumps(argv)], cwd=cwd)
    line = next(ln for ln in done.stderr.splitlines()[::-1] if ln.startswith(MARK))
    return json.loads(line[len(MARK):])


def import_costs(argv: list[str], cwd: Path, top: int = 6) -> list[tuple[str, float]]:
    """The top-level imports a citebot command spends most on (`python -X importtime`)."""
    _, done = timed([sys.executable, "-X", "importtime", "-c", CHECK, json.dumps(argv)],
                    cwd=cwd)
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            _, cumulative, name = line.split("|")
            if not name.startswith("  ") and cumulative.strip().isdigit():  # top level only
                costs[name.strip()] = costs.get(name.strip(), 0.0) + int(cumulative) / 1e6
    return sorted(costs.items(), key=lambda kv: -kv[1])[:top]


def drop_caches() -> bool:
    """Empty the page cache (root only); False when this machine does not allow it."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measure(index_dir: Path, *, runs: int, reference: str, cwd: Path, idle: float,
            drop: bool) -> tuple[list[Row], list[tuple[str, float, float | None]], list[str]]:
    """(rows, cold-after-idle rows (label, seconds, × reference), notes)."""
    cmds = commands(index_dir, reference)
    rows = {name: Row(name, label, target=TARGET if name in ("search", "ask") else None)
            for name, (label, _) in cmds.items()}
    names = list(cmds)
    for name in names if runs > 1 else ():  # warm-up: file cache and .pyc files, as for a
        timed(cmds[name][1], cwd=cwd)        # user's second command
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds, done = timed(cmds[name][1], cwd=cwd)
            if name in ("search", "ask") and "Darroch" not in done.stdout:
                raise RuntimeError(f"{name} printed no answer: {done.stdout[:500]}")
            rows[name].seconds.append(seconds)
    for name in names[1:]:
        rows[name].modules = heavy_modules(cmds[name][1][len(citebot_cmd()):], cwd)
    notes: list[str] = []
    if runs > 1:
        costs = import_costs(cmds["ask"][1][len(citebot_cmd()):], cwd)
        notes.append("imports of `ask` costing most (`-X importtime`, cumulative, one run): "
                     + ", ".join(f"{name} {s:.2f} s" for name, s in costs))

    cold: list[tuple[str, float, float | None]] = []
    if drop and drop_caches():
        ask_s, _ = timed(cmds["ask"][1], cwd=cwd)
        drop_caches()
        ref_s, _ = timed(cmds["reference"][1], cwd=cwd)
        cold += [("`ask` after dropping the page cache", ask_s, ask_s / ref_s),
                 (f"`import {reference}` after dropping the page cache", ref_s, 1.0)]
        notes.append("page cache dropped as root (`echo 3 > /proc/sys/vm/drop_caches`) before "
                     "each of the two processes: nothing of Python, the venv or the model was "
                     "in memory, the worst case of a VM that paged everything out")
    elif drop:
        notes.append("the page cache could not be dropped (not root); use --idle SECONDS")
    if idle > 0:
        time.sleep(idle)
        ask_s, _ = timed(cmds["ask"][1], cwd=cwd)
        ref = median(rows["reference"].seconds)
        cold.append((f"`ask` after {idle:g} s idle", ask_s, ask_s / ref))
        notes.append(f"after {idle:g} s asleep, one `ask` (ratio to the warm reference median)")
    return list(rows.values()), cold, notes


def report(rows: list[Row], cold, notes: list[str], *, runs: int, smoke: bool,
           index_note: str) -> str:
    ref = median(rows[0].seconds)
    body = []
    for row in rows:
        m = median(row.seconds)
        ratio = m / ref
        mods = "—" if row.modules is None else (", ".join(row.modules) or "none")
        target = f"≤ {row.target:g}×" if row.target else ""
        ok = None if row.target is None or smoke else ratio <= row.target
        body.append([row.label, f"{m:.3f}", f"{min(row.seconds):.3f}", f"{ratio:.3f}", mods,
                     target, verdict(ok) if row.target else ""])
    light = {r.name: r.modules is not None and not r.modules for r in rows}
    lines = [f"# Cold start{' (smoke)' if smoke else ''}", "", machine_line(), "",
             f"Median of {runs} interleaved runs, each a new process, {index_note}. Heavy "
             f"modules: which of {', '.join(HEAVY)} the command had imported at exit (a "
             "separate run).", "",
             table(["process", "median s", "min s", "× reference", "heavy modules imported",
                    "target", "result"], body, "lrrrlll"), "",
             f"`--help` imports none of them: {'yes' if light.get('help') else 'no'}; "
             f"`index list` imports none of them: {'yes' if light.get('list') else 'no'}.", ""]
    if cold:
        lines += ["Cold after idle:", "",
                  table(["process", "seconds", "× reference"],
                        [[label, f"{s:.2f}", "" if r is None else f"{r:.3f}"]
                         for label, s, r in cold]), ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--index", type=Path, help="an existing seeds index (default: build one "
                        "in a temporary folder)")
    parser.add_argument("--idle", type=float, default=0.0,
                        help="also time one ask after sleeping this many seconds")
    parser.add_argument("--no-drop", action="store_true", help="do not drop the page cache")
    parser.add_argument("--reference", default=None,
                        help="module the reference imports (default sentence_transformers; "
                        "numpy in a smoke run)")
    parser.add_argument("--smoke", action="store_true", help="1 round, quick, for CI")
    parser.add_argument("--out", type=Path, help="markdown file (default for full runs: "
                        "bench/results/coldstart.md)")
    args = parser.parse_args(argv)
    runs = 1 if args.smoke else args.runs
    reference = args.reference or ("numpy" if args.smoke else "sentence_transformers")
    with tempfile.TemporaryDirectory(prefix="citebot-coldstart-") as tmp:
        cwd = Path(tmp)  # no stray ./config.toml
        index_dir = args.index
        if index_dir is None:
            index_dir = cwd / "index"
            seconds = build_index(index_dir, [SEEDS])
            index_note = f"on a seeds index built by `citebot index build` ({seconds:.1f} s)"
        else:
            index_note = f"on the seeds index in {index_dir}"
        rows, cold, notes = measure(index_dir, runs=runs, reference=reference, cwd=cwd,
                                    idle=0.0 if args.smoke else args.idle,
                                    drop=not (args.smoke or args.no_drop))
    text = report(rows, cold, notes, runs=runs, smoke=args.smoke, index_note=index_note)
    write_report(text, "coldstart", args.out, args.smoke)
    return text


if __name__ == "__main__":
    main()
