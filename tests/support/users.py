"""Simulated users of a gateway: threads posting population-A rows, answers counted by the
version that gave them (`controller.gateway.VERSION_HEADER`), failures kept."""

from __future__ import annotations

import collections
import random
import threading
import time
from typing import Any

import httpx

from mlgitops.controller import gateway
from support.data import FEATURES, make_frame


class Users:
    """Users posting rows to a gateway's ``url`` (``clients`` threads, each request with an
    ``x-client`` header); every answer is counted by the version it names, every failure (a
    status other than 200, or no answer) is kept. The rows are ``records`` (JSON rows), by
    default population A of the credit data."""

    def __init__(self, url: str, *, clients: int = 1, pause: float = 0.01,
                 records: list[dict[str, Any]] | None = None) -> None:
        self.url = url
        self.pause = pause
        self.records = records if records is not None else \
            make_frame(3000, seed=9)[FEATURES].to_dict(orient="records")
        self.stop = threading.Event()
        self.by_version: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.failed: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(clients)]

    def _run(self, client_id: int) -> None:
        # batches start at random rows and come from random clients (seeded per thread): what
        # a canary keys to either version is a sample of the whole frame
        rng = random.Random(client_id)
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                start = rng.randrange(len(self.records) - 25)
                batch = self.records[start:start + 25]
                try:
                    r = http.post(self.url, json={"dataframe_records": batch},
                                  headers={"x-client": f"user-{rng.randrange(97)}"})
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        self.by_version[r.headers.get(gateway.VERSION_HEADER, "?")] += 1
                    else:
                        self.failed.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                time.sleep(self.pause)

    @property
    def answered(self) -> int:
        return sum(self.by_version.values())

    def __enter__(self) -> Users:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
