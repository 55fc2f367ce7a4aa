"""The baselines our runner is compared with: the best hand-written asyncio + httpx script, and a loop.

:class:`Script` is what a careful user would write for the same jobs: one ``httpx.AsyncClient``, a
task per prediction that waits for the outputs it needs, a semaphore for the concurrency, the same
client-side rate limits (a GCRA bucket of the same rate and burst), ``Prefer: wait=60`` on create,
polling only when the answer is not final, and the outputs downloaded to disk. It keeps no manifest,
checks nothing and retries only a create answered 429 and a GET whose kept-alive connection the
server closed under it: a floor for our runner, not a rival.

A ``Prefer: wait`` answer that carries the output is final even when it says ``processing``: the
kkiai API was recorded answering so (the sandbox's default ``sync_final_status``).

:func:`sequential` is the loop a user writes first: one prediction at a time, in dependency order.

Like :mod:`.shapes`, this module imports nothing from the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .shapes import LIST_OUTPUT, VERSIONS, Job, Ref, Shape

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
WAIT = 60  # Prefer: wait=60, the API's longest hold
POLL, MAX_POLL = 0.5, 2.0  # the same poll schedule as our client's defaults
KEEPALIVE = 2.0  # seconds an idle connection is kept: well inside uvicorn's (and httpx's) 5 s


@dataclass
class Counts:
    """The requests a baseline sent."""

    creates: int = 0
    polls: int = 0
    downloads: int = 0

    @property
    def requests(self) -> int:
        return self.creates + self.polls + self.downloads


class Limiter:
    """A GCRA token bucket of ``per_minute`` with ``burst``, like our client's (0 turns it off)."""

    def __init__(self, per_minute: float, *, burst: int = 10) -> None:
        self._interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._tolerance = (burst - 1) * self._interval
        self._tat = float("-inf")

    async def take(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        wait = tat - self._tolerance - now
        if wait > 0:
            await asyncio.sleep(wait)


def _final(body: dict[str, Any], *, waited: bool) -> bool:
    if body["status"] in TERMINAL:
        return True
    return waited and body["status"] == "processing" and body.get("output") is not None


def _resolve(job: Job, outputs: dict[str, Any]) -> dict[str, Any]:
    """``job``'s input with every reference replaced by the output it names."""
    resolved = {}
    for key, value in job.input.items():
        if isinstance(value, Ref):
            output = outputs[value.job]
            value = output if value.index is None else output[value.index]
        resolved[key] = value
    return resolved


def _urls(job: Job, output: Any) -> list[str]:
    return list(output) if job.model in LIST_OUTPUT else [output]


def _create_body(job: Job, input: dict[str, Any]) -> dict[str, Any]:
    return {"version": f"{job.model}:{VERSIONS[job.model]}", "input": input}


class Script:
    """The hand-written concurrent script."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        out_dir: Path,
        concurrency: int,
        create_per_minute: float,
        other_per_minute: float,
        clients: int = 1,
        wait: int = WAIT,
        poll: tuple[float, float] = (POLL, MAX_POLL),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clients = clients
        self.wait, self.poll = wait, poll  # a time-scaled benchmark shortens them
        self.auth = {"Authorization": f"Bearer {token}"}
        self.out_dir = out_dir
        self.concurrency = concurrency
        self.counts = Counts()
        self._creates = Limiter(create_per_minute)
        self._others = Limiter(other_per_minute)

    async def run(self, shape: Shape) -> Counts:
        """Make every prediction of ``shape`` and download its outputs.

        With ``clients`` > 1 the jobs are spread over that many ``httpx.AsyncClient``: each keeps its
        own connection pool, whose bookkeeping costs grow with the connections it holds (the burst
        check holds thousands).
        """
        slots = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        done: dict[str, asyncio.Future[Any]] = {job.id: loop.create_future() for job in shape.jobs}
        per_client = -(-self.concurrency // self.clients)
        # Idle connections are dropped before the server's keep-alive timeout (uvicorn's 5 s, httpx's
        # default too) can close one under a request that reuses it.
        limits = httpx.Limits(
            max_connections=None, max_keepalive_connections=2 * per_client, keepalive_expiry=KEEPALIVE
        )
        timeout = httpx.Timeout(self.wait + 30, connect=10)
        async with contextlib.AsyncExitStack() as stack:
            pool = [
                await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=timeout))
                for _ in range(self.clients)
            ]

            async def one(index: int, job: Job) -> None:
                http = pool[index % len(pool)]
                needed = {dep: await done[dep] for dep in job.deps}
                async with slots:
                    output = await self._predict(http, job, _resolve(job, needed))
                    await asyncio.gather(
                        *(self._download(http, url, job, i) for i, url in enumerate(_urls(job, output)))
                    )
                done[job.id].set_result(output)

            await asyncio.gather(*(one(i, job) for i, job in enumerate(shape.jobs)))
        return self.counts

    async def _predict(self, http: httpx.AsyncClient, job: Job, input: dict[str, Any]) -> Any:
        await self._creates.take()
        self.counts.creates += 1
        headers = {**self.auth, "Prefer": f"wait={self.wait}"}
        response = await http.post(
            f"{self.base_url}/predictions", json=_create_body(job, input), headers=headers
        )
        while response.status_code == 429:  # throttled, nothing created: wait as told, send again
            await asyncio.sleep(float(response.json().get("retry_after") or 1))
            await self._creates.take()
            self.counts.creates += 1
            response = await http.post(
                f"{self.base_url}/predictions", json=_create_body(job, input), headers=headers
            )
        response.raise_for_status()
        body = response.json()
        delay, max_poll = self.poll
        waited = True
        while not _final(body, waited=waited):
            await asyncio.sleep(delay)
            delay, waited = min(delay * 1.5, max_poll), False
            await self._others.take()
            self.counts.polls += 1
            response = await self._get(http, f"{self.base_url}/predictions/{body['id']}")
            response.raise_for_status()
            body = response.json()
        if body["status"] not in ("succeeded", "processing"):
            raise RuntimeError(f"{job.id}: prediction {body['id']} {body['status']}: {body.get('error')}")
        return body["output"]

    async def _get(self, http: httpx.AsyncClient, url: str) -> httpx.Response:
        try:
            return await http.get(url, headers=self.auth)
        except httpx.RemoteProtocolError:  # the server closed a kept-alive connection: a GET may go again
            self.counts.polls += 1
            return await http.get(url, headers=self.auth)

    async def _download(self, http: httpx.AsyncClient, url: str, job: Job, index: int) -> None:
        self.counts.downloads += 1
        try:
            response = await http.get(url)
        except httpx.RemoteProtocolError:  # the server closed a kept-alive connection: a GET may go again
            self.counts.downloads += 1
            response = await http.get(url)
        response.raise_for_status()
        folder = self.out_dir / job.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"output_{index}.png").write_bytes(response.content)


def sequential(base_url: str, jobs: list[Job], *, token: str, out_dir: Path) -> Counts:
    """One prediction at a time, in the order given (dependencies first), outputs downloaded."""
    counts = Counts()
    base = base_url.rstrip("/")
    auth = {"Authorization": f"Bearer {token}"}
    outputs: dict[str, Any] = {}
    with httpx.Client(timeout=httpx.Timeout(WAIT + 30, connect=10)) as http:
        for job in jobs:
            counts.creates += 1
            body = http.post(
                f"{base}/predictions",
                json=_create_body(job, _resolve(job, outputs)),
                headers={**auth, "Prefer": f"wait={WAIT}"},
            ).json()
            delay, waited = POLL, True
            while not _final(body, waited=waited):
                time.sleep(delay)
                delay, waited = min(delay * 1.5, MAX_POLL), False
                counts.polls += 1
                body = http.get(f"{base}/predictions/{body['id']}", headers=auth).json()
            if body["status"] not in ("succeeded", "processing"):
                raise RuntimeError(f"{job.id}: prediction {body['id']} {body['status']}: {body.get('error')}")
            outputs[job.id] = body["output"]
            for index, url in enumerate(_urls(job, body["output"])):
                counts.downloads += 1
                folder = out_dir / job.id
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"output_{index}.png").write_bytes(http.get(url).content)
    return counts
