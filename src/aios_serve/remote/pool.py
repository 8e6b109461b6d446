"""The upstreams of one remote model: least-outstanding-requests choice, active health checks,
ejection of failing upstreams and their re-admission."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import httpx

from aios_serve.errors import ApiError, ErrorKind
from aios_serve.remote.settings import RemoteOptions, UpstreamSpec

log = logging.getLogger("aios_serve.remote")


@dataclass(eq=False)
class Upstream:
    """One upstream server and what the pool knows of it."""

    url: str
    model: str
    headers: dict[str, str]
    outstanding: int = 0
    """Requests sent to it and not yet answered in full."""
    healthy: bool = True
    failed_checks: int = 0
    passed_checks: int = 0
    sent: int = field(default=0)


class UpstreamPool:
    """Picks an upstream for each request and keeps every upstream's health up to date."""

    def __init__(self, served_name: str, specs: list[UpstreamSpec], options: RemoteOptions) -> None:
        self.served_name = served_name
        self.options = options
        self.upstreams = [
            Upstream(
                url=spec.url,
                model=spec.model or served_name,
                headers={"Authorization": f"Bearer {key}"} if (key := spec.key()) else {},
            )
            for spec in specs
        ]
        self._turn = 0
        self._checker: asyncio.Task[None] | None = None

    def acquire(self, exclude: tuple[Upstream, ...] = ()) -> Upstream:
        """The healthy upstream with the fewest outstanding requests (ties take turns)."""
        candidates = [u for u in self.upstreams if u.healthy and u not in exclude]
        if not candidates:
            raise ApiError(
                ErrorKind.OVERLOADED,
                f"No healthy upstream server for the model `{self.served_name}`; retry shortly.",
                headers={"Retry-After": str(max(1, round(self.options.health_interval_s)))},
            )
        start = self._turn % len(candidates)
        self._turn += 1
        rotated = candidates[start:] + candidates[:start]
        chosen = min(rotated, key=lambda u: u.outstanding)
        chosen.outstanding += 1
        chosen.sent += 1
        return chosen

    @staticmethod
    def release(upstream: Upstream) -> None:
        upstream.outstanding -= 1

    def eject(self, upstream: Upstream, reason: str) -> None:
        """Take an upstream out of rotation until health checks re-admit it."""
        if upstream.healthy:
            log.warning("upstream %s of %s ejected: %s", upstream.url, self.served_name, reason)
        upstream.healthy = False
        upstream.passed_checks = 0

    async def check_all(self, client: httpx.AsyncClient) -> None:
        """One round of health checks, all upstreams at once."""
        await asyncio.gather(*(self._check(client, upstream) for upstream in self.upstreams))

    async def _check(self, client: httpx.AsyncClient, upstream: Upstream) -> None:
        try:
            response = await client.get(
                upstream.url + self.options.health_path,
                headers=upstream.headers,
                timeout=self.options.health_timeout_s,
            )
            passed, reason = response.is_success, f"health check answered {response.status_code}"
        except httpx.HTTPError as exc:
            passed, reason = False, f"health check failed: {type(exc).__name__}"
        if passed:
            upstream.failed_checks = 0
            upstream.passed_checks += 1
            if not upstream.healthy and upstream.passed_checks >= self.options.healthy_after:
                upstream.healthy = True
                log.info("upstream %s of %s re-admitted", upstream.url, self.served_name)
        else:
            upstream.passed_checks = 0
            upstream.failed_checks += 1
            if upstream.failed_checks >= self.options.unhealthy_after:
                self.eject(upstream, reason)

    def start_checks(self, client: httpx.AsyncClient) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.options.health_interval_s)
                await self.check_all(client)

        self._checker = asyncio.create_task(loop(), name=f"health checks of {self.served_name}")

    async def stop_checks(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None
