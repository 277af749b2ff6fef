"""Labels that came back for logged predictions, kept per model (``<root>/<model>/``).

Each accepted feedback batch is one Parquet file (``batch-<ns>-<seq>.parquet``: ``id``,
``label`` as JSON text, ``received``), written under a temporary name and renamed, so a batch
is stored whole or not at all. Reading takes the last label given for each id: a repeated id
is an update, never a second row. Past `COMPACT_AFTER` files, `Labels.add` folds them into
one (the latest label per id), and rows older than ``max_age_seconds`` are dropped then.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlgitops import errors

COMPACT_AFTER = 64
_BATCH = re.compile(r"batch-(\d{20})-(\d{6})\.parquet")


class Labels:
    """The label store of every model under ``root`` (one process writes it: the gateway)."""

    def __init__(self, root: Path, *, max_age_seconds: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._seq = 0

    def known(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` already have a label for model ``name``."""
        frame = self.read(name)
        return set(frame["id"][frame["id"].isin(set(ids))].tolist())

    def add(self, name: str, ids: Sequence[str], labels: Sequence[Any]) -> None:
        """Store one batch (the last label of an id repeated within it wins)."""
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
        frame = pd.DataFrame({"id": list(ids), "label": [json.dumps(v) for v in labels],
                              "received": self.clock()})
        with self._lock:
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            self._write(folder, frame)
            if len(self._files(folder)) > COMPACT_AFTER:
                self._compact(folder)

    def read(self, name: str) -> pd.DataFrame:
        """The latest label of every id of model ``name``: columns ``id``, ``label`` (decoded
        from JSON), ``received``."""
        frame = self._read_raw(self.root / name)
        frame = frame.drop_duplicates("id", keep="last", ignore_index=True)
        frame["label"] = [json.loads(v) for v in frame["label"].tolist()]
        return frame

    def _files(self, folder: Path) -> list[Path]:
        try:
            names = sorted(n for n in os.listdir(folder) if _BATCH.fullmatch(n))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise errors.RuntimeFailure(f"cannot list the labels in {folder} ({exc})") from exc
        return [folder / n for n in names]

    def _read_raw(self, folder: Path) -> pd.DataFrame:
        frames = []
        for path in self._files(folder):
            try:
                frames.append(pd.read_parquet(path))
            except FileNotFoundError:
                continue  # compacted under us: the compacted file has its rows
            except (OSError, ValueError) as exc:
                raise errors.RuntimeFailure(f"cannot read the labels in {path} ({exc})") from exc
        if not frames:
            return pd.DataFrame({"id": pd.Series(dtype=str), "label": pd.Series(dtype=str),
                                 "received": pd.Series(dtype=float)})
        return pd.concat(frames, ignore_index=True)

    def _write(self, folder: Path, frame: pd.DataFrame) -> Path:
        self._seq = (self._seq + 1) % 1_000_000
        name = f"batch-{time.time_ns():020d}-{self._seq:06d}.parquet"
        tmp = folder / f".{name}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, folder / name)
        return folder / name

    def _compact(self, folder: Path) -> None:
        old = self._files(folder)
        frame = self._read_raw(folder).drop_duplicates("id", keep="last", ignore_index=True)
        if self.max_age_seconds is not None:
            frame = frame[frame["received"] >= self.clock() - self.max_age_seconds]
        self._write(folder, frame.reset_index(drop=True))
        for path in old:
            path.unlink(missing_ok=True)
