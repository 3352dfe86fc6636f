"""Watch: keep an index in step with its source folders while it serves.

A polling scanner rather than inotify/FSEvents: it needs no dependency, behaves the same on
every file system (network mounts and containers included) and costs one stat per file per
round, which is nothing next to embedding. Changes are debounced: an update starts only once
the folders have been quiet for `quiet` seconds, so a file being copied in is read whole and a
burst of edits costs one update.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import ingest
from .errors import CitebotError
from .library import Library, UpdateReport
from .paths import path_within

log = logging.getLogger("citebot.watch")

# (mtime in ns, size, inode) of every file that can change what an update indexes.
Fingerprint = dict[str, tuple[int, int, int]]


def local_specs(specs: Sequence[str]) -> list[str]:
    """The files and folders among sources; URLs are not watched (nothing tells us they
    changed), and already indexed ones are kept, since pruning only touches folders."""
    return [s for s in specs if not ingest.is_web_url(s)]


def scan(specs: Sequence[str]) -> tuple[Fingerprint, list[str]]:
    """What the watched files look like now, and the specs that still hold a file to index."""
    found: Fingerprint = {}
    live = []
    for spec in local_specs(specs):
        try:
            files = ingest.discover([spec])
        except (CitebotError, OSError):
            live.append(spec)  # unreadable, not gone: let the update report why
            continue
        for file in files:
            try:
                st = os.stat(file)
            except OSError:  # gone between listing and stat: the next round sees it gone
                continue
            found[file] = (st.st_mtime_ns, st.st_size, st.st_ino)
        if any(f in found for f in files):
            live.append(spec)
        try:  # titles and dates live in a folder's sidecar
            st = os.stat(os.path.join(spec, ingest.SIDECAR))
            found[os.path.join(spec, ingest.SIDECAR)] = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            pass
    return found, live


def fingerprint(specs: Sequence[str]) -> Fingerprint:
    """mtime, size and inode of every watched file; any difference means an update is due."""
    return scan(specs)[0]


class Watcher:
    """Runs Library.update(specs, prune=True) whenever the watched files change.

    Args:
        quiet: seconds without further changes before an update starts.
        interval: seconds between scans.
        on_update: called with each report that wrote a new generation.
        on_error: called with the error when an update fails; the watcher tries again after
            the next change (a file that cannot be read is not re-read every round).
    """

    def __init__(self, library: Library, specs: Sequence[str], *, quiet: float = 2.0,
                 interval: float = 0.5,
                 on_update: Callable[[UpdateReport], None] | None = None,
                 on_error: Callable[[CitebotError], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.library = library
        self.specs = local_specs(specs)
        self.quiet, self.interval = quiet, interval
        self.on_update, self.on_error = on_update, on_error
        self.clock = clock
        self.updates = 0
        self._indexed: Fingerprint | None = None  # None: catch up once at start
        self._seen: Fingerprint | None = None
        self._seen_at = 0.0
        self._stop = threading.Event()

    def poll(self) -> UpdateReport | None:
        """One round: scan, and update if the files changed and have settled since."""
        now = self.clock()
        seen, live = scan(self.specs)
        if seen != self._seen:
            self._seen, self._seen_at = seen, now
        if seen == self._indexed or (self._indexed is not None
                                     and now - self._seen_at < self.quiet):
            return None
        self._indexed = seen  # taken before reading: a change during the update is seen next
        try:
            # A named file or folder that vanished (or was emptied) is dropped, not an error:
            # the update would refuse it as unreadable.
            gone = [s for s in self.specs if s not in live and self._indexed_under(s)]
            report = self.library.update(live, prune=True, remove=gone)
        except OSError as exc:  # a full disk, say: the old generation stays live
            self._report(CitebotError(f"the index update failed: {exc}"))
            return None
        except CitebotError as exc:
            self._report(exc)
            return None
        except Exception:  # a bug must not end the watching: log it, try after the next change
            log.exception("updating the index from %s failed", ", ".join(self.specs))
            self._report(CitebotError("the index update failed; the error is in the log"))
            return None
        self.updates += 1
        if report.wrote and self.on_update:
            self.on_update(report)
        return report

    def _indexed_under(self, spec: str) -> bool:
        if not self.library.exists():
            return False
        return any(path_within(s.path, spec) for s in self.library.sources() if s.path)

    def _report(self, exc: CitebotError) -> None:
        if self.on_error:
            self.on_error(exc)

    def run(self) -> None:
        """Poll until stop() is called (from another thread or a signal handler)."""
        if not self.specs:
            raise CitebotError("there is nothing to watch: give a file or folder, not only URLs")
        missing = [s for s in self.specs if not Path(s).exists()]
        if missing:
            raise CitebotError(f"{missing[0]}: no such file or folder")
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def start(self) -> threading.Thread:
        """run() in a daemon thread, for a process that does other things (the bot)."""
        thread = threading.Thread(target=self._run_logged, name="citebot-watch", daemon=True)
        thread.start()
        return thread

    def _run_logged(self) -> None:
        try:
            self.run()
        except CitebotError as exc:
            self._report(exc)
        except Exception:  # a bug: say so in the log rather than let the thread vanish quietly
            log.exception("the index watcher stopped")

    def stop(self) -> None:
        self._stop.set()
