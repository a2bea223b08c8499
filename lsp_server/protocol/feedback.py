"""Local acceptance statistics: which suggestions were shown, accepted or partly accepted, per
language and per context source. Kept in a JSON file beside the model cache; nothing leaves the
machine."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from runtime.models import cache_root

logger = logging.getLogger(__name__)

EVENTS = ("shown", "accepted", "partial")
MAX_TRACKED = 256  # suggestions remembered for their later accept / partial-accept events


@dataclass(frozen=True)
class Shown:
    """What we need to know about a suggestion when its feedback arrives."""

    language: str
    source: str  # "repository" or "in-file"
    length: int


def stats_path() -> Path:
    """Where the statistics live: `$CODER_LSP_STATS`, else stats.json in the cache root."""
    override = os.environ.get("CODER_LSP_STATS")
    return Path(override).expanduser() if override else cache_root() / "stats.json"


class FeedbackStats:
    """Counters of shown / accepted / partially accepted suggestions, saved after each event."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or stats_path()
        self._lock = threading.Lock()
        self._tracked: OrderedDict[str, Shown] = OrderedDict()
        self.counts: dict[str, dict[str, dict[str, int]]] = self._load()

    def _load(self) -> dict[str, dict[str, dict[str, int]]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {"language": {}, "source": {}}
        if not isinstance(data, dict):
            return {"language": {}, "source": {}}
        return {kind: dict(data.get(kind, {})) for kind in ("language", "source")}

    def track(self, shown: Shown) -> str:
        """Remember a suggestion about to be offered; returns the id its feedback will carry."""
        suggestion_id = uuid.uuid4().hex
        with self._lock:
            self._tracked[suggestion_id] = shown
            while len(self._tracked) > MAX_TRACKED:
                self._tracked.popitem(last=False)
        return suggestion_id

    def record(self, suggestion_id: str, event: str) -> bool:
        """Count `event` for a tracked suggestion; False for unknown ids or events."""
        with self._lock:
            shown = self._tracked.get(suggestion_id)
            if shown is None or event not in EVENTS:
                return False
            for kind, key in (("language", shown.language), ("source", shown.source)):
                row = self.counts[kind].setdefault(key, dict.fromkeys(EVENTS, 0))
                row[event] = row.get(event, 0) + 1
            self._save()
        return True

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self.counts, indent=2, sort_keys=True))
            os.replace(temporary, self.path)
        except OSError as error:  # statistics are a nicety: never fail a request over them
            logger.warning("could not save statistics to %s: %s", self.path, error)


def format_table(counts: dict[str, dict[str, dict[str, int]]]) -> str:
    """The statistics as a plain table, one row per language and per context source."""
    lines = [f"{'':12} {'KEY':14} {'SHOWN':>7} {'ACCEPTED':>9} {'PARTIAL':>8} {'RATE':>6}"]
    for kind in ("language", "source"):
        for key, row in sorted(counts.get(kind, {}).items()):
            shown = row.get("shown", 0)
            # Acceptance rate counts full accepts; partial accepts have their own column.
            rate = f"{100 * row.get('accepted', 0) / shown:.0f}%" if shown else "-"
            lines.append(
                f"{kind:12} {key:14} {shown:7} {row.get('accepted', 0):9} "
                f"{row.get('partial', 0):8} {rate:>6}"
            )
    if len(lines) == 1:
        lines.append("no suggestions recorded yet")
    return "\n".join(lines)
