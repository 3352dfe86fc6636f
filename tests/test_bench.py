"""The benchmark scripts: each smoke mode runs and prints the table it promises, with sane numbers.

The numbers themselves are not judged here (CI machines vary); bench/results/ holds real runs.
"""

from __future__ import annotations

import pytest

from bench import build, coldstart, memory, queries
from bench.common import parse_table


def number(cell: str) -> float:
    return float(cell.replace("*", "").replace(",", "").split()[0])


def close(ratio: str, value: float, reference: float) -> bool:
    """A printed ratio against one recomputed from printed (rounded) figures."""
    return number(ratio) == pytest.approx(value / reference, rel=0.02, abs=0.02)


def test_coldstart_smoke(seeds_index, tmp_path):
    out = tmp_path / "coldstart.md"
    text = coldstart.main(["--smoke", "--index", str(seeds_index), "--out", str(out)])
    assert out.read_text(encoding="utf-8") == text
    rows = {r["process"]: r for r in parse_table(text)}
    labels = list(rows)
    assert "(reference)" in labels[0]
    assert [any(w in label for label in labels) for w in ("search", "ask", "--help", "list")] \
        == [True] * 4
    ref = number(rows[labels[0]]["median s"])
    for label, row in rows.items():
        assert 0 < number(row["min s"]) <= number(row["median s"]) < 120, label
        assert close(row["× reference"], number(row["median s"]), ref), label

    def heavy(word: str) -> str:
        return next(r["heavy modules imported"] for label, r in rows.items() if word in label)

    assert heavy("--help") == "none" and heavy("index list") == "none"
    assert "torch" not in heavy("search") and "torch" not in heavy("ask")
    assert "`--help` imports none of them: yes" in text


def test_queries_smoke(seeds_index, tmp_path):
    text = queries.main(["--smoke", "--index", str(seeds_index),
                         "--out", str(tmp_path / "queries.md")])
    rows = parse_table(text)
    assert len(rows) == 7
    ref = number(rows[1]["ms per question"])
    assert rows[1]["× reference"] == "1.000" and ref > 0
    for row in rows[1:]:
        assert number(row["ms per question"]) >= 0, row
    for row in rows:  # the first, a difference of two timings, may be below noise (< 0)
        assert close(row["× reference"], number(row["ms per question"]), ref), row
    assert "embedding" in rows[3]["measure"] and "retrieval" in rows[4]["measure"]
    assert "Library.ask" in rows[6]["measure"] and number(rows[6]["ms per question"]) > 0
    assert "5 questions" in text


def test_memory_smoke(seeds_index, tmp_path):
    text = memory.main(["--smoke", "--index", str(seeds_index),
                        "--out", str(tmp_path / "memory.md")])
    rows = parse_table(text)
    assert rows[0]["process"].startswith("library process")
    for row in rows:
        for mb in row["MB"].split(" / "):
            assert 20 < number(mb) < 5000, row
    assert "torch imported: no" in text
    if "`citebot bot` (fake Discord)" in text:  # aiohttp present: the real bot ran
        assert len(rows) == 8 and "torch loaded: no" in text and "SIGTERM 0" in text


def test_build_smoke(tmp_path):
    text = build.main(["--smoke", "--out", str(tmp_path / "build.md")])
    rows = parse_table(text)
    assert "(reference)" in rows[0]["path"] and rows[0]["× reference"] == "1.00"
    assert "chosen bulk path" in rows[1]["path"]
    assert "index build" in rows[-1]["path"]
    ref = number(rows[0]["chunks/s"])
    for row in rows:
        assert number(row["chunks/s"]) > 0, row
        assert close(row["× reference"], number(row["chunks/s"]), ref), row
    for row in rows[:-1]:
        assert number(row["min cosine"]) > 0.99, row
    # The arithmetic ceiling: shares are measured rate over ceiling, in the same units.
    ceiling = {r[""]: r for r in parse_table(text[text.index("What the arithmetic allows"):])}
    peak, top, got, share = (ceiling[k] for k in ceiling)
    for kind, measured in (("fp32", ref), ("bf16", number(rows[1]["chunks/s"]))):
        assert number(peak[kind]) > 0 and number(got[kind]) == pytest.approx(measured, abs=0.05)
        assert number(share[kind].rstrip("%")) == pytest.approx(100 * measured / number(top[kind]),
                                                            abs=1)


def test_frame_pattern_reads_tqdm_output():
    frame = "embedding:  40%|####      | 1632/4079 [00:41<01:02, 39.1chunk/s]"
    assert build.FRAME.findall(frame) == [("1632", "4079", "00:41", "01:02", "39.1")]
    assert build.FRAME.findall("0/62 [00:00<?, ?chunk/s]") == [("0", "62", "00:00", "?", "?")]
    assert build.FRAME.findall("5/9 [00:01<00:01, 3.2text/s]") == [("5", "9", "00:01", "00:01",
                                                                     "3.2")]


def test_updates_smoke(tmp_path):
    """bench/updates.py --smoke grows an index, times one-article updates and compares a grown
    index with a fresh one; every row is filled and the two indexes agree."""
    from bench import updates

    text = updates.main(["--smoke", "--work", str(tmp_path / "work"),
                         "--out", str(tmp_path / "updates.md")])
    assert "STAND-IN EMBEDDING" in text
    rows = parse_table(text)
    assert len(rows) == 2
    for row in rows:
        assert number(row["chunks"]) >= 300
        for key in ("add one s", "edit one s", "remove one s", "search ms", "ask ms"):
            assert 0 < number(row[key]) < 120, (key, row)
        update_mb, reader_mb = (number(x) for x in row["peak MB update / reader"].split(" / "))
        assert 20 < update_mb < 5000 and 20 < reader_mb < 5000
        assert 0.5 < number(row["disk / fresh build"]) < 3
    (small,) = parse_table(text.split("Small files:")[1])
    assert number(small["files"]) == 200 and number(small["chunks"]) >= 200
    assert number(small["load files/s"]) > number(small["build files/s"]) > 0
    assert 0 < number(small["add one s"]) < 120
    same = text.split("fresh build after adds, an edit and a removal: ")[1].split()
    assert same[0] == same[2] and int(same[0]) > 0  # every question's top-10 matched
