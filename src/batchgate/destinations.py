"""Fair delivery: how many callbacks are in flight to each destination, and which ones are backed off.

A destination is a callback URL's host and port. One receiver that is slow or dead must not delay
anyone else's callbacks, so each destination gets at most `per_destination` deliveries in flight,
and one that keeps failing is backed off (a circuit breaker): after `threshold` failures in a row
nothing is sent to it for a cool-down that doubles with each failed probe (up to `max_cooldown_s`);
then one delivery probes it, and a success closes the breaker. Backing off never costs a delivery
an attempt: what comes due meanwhile is handed back, due when the breaker lets a probe through.
Pure bookkeeping with an injected clock; the deliverer asks and tells it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yarl import URL


def destination_of(url: str) -> str:
    """`host:port` of a callback URL, the port made explicit (`example.com:443`)."""
    parsed = URL(url)
    return f"{parsed.host}:{parsed.port}"


@dataclass
class _Breaker:
    failures: int = 0  # in a row
    open_until: float = 0.0
    cooldown_s: float = 0.0
    probing: bool = False


@dataclass
class Destinations:
    per_destination: int = 10
    threshold: int = 5
    first_cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0
    in_flight: dict[str, int] = field(default_factory=dict)
    breakers: dict[str, _Breaker] = field(default_factory=dict)

    def skip(self, now: float) -> list[str]:
        """The destinations not to claim deliveries for now: full, backed off, or being probed."""
        full = {dest for dest, count in self.in_flight.items() if count >= self.per_destination}
        return sorted(
            full | {dest for dest, breaker in self.breakers.items() if self._closed_to(breaker, now)}
        )

    def backed_off_until(self, dest: str, now: float) -> float | None:
        """When a delivery to `dest` is due again, if it may not be tried now: its breaker is open or
        probing, or it already has as many deliveries in flight as it may (a claim can take a few
        more than that). Then it is due at once: a claim skips a full destination, and the claim
        after one of its deliveries ends takes it."""
        breaker = self.breakers.get(dest)
        if breaker is not None and self._closed_to(breaker, now):
            return max(breaker.open_until, now + 1.0)  # a probe in flight: look again in a second
        if self.in_flight.get(dest, 0) >= self.per_destination:
            return now
        return None

    def started(self, dest: str, now: float) -> None:
        self.in_flight[dest] = self.in_flight.get(dest, 0) + 1
        breaker = self.breakers.get(dest)
        if breaker is not None and breaker.failures >= self.threshold and now >= breaker.open_until:
            breaker.probing = True  # the one delivery let through after the cool-down

    def abandoned(self, dest: str) -> None:
        """An attempt stopped before it ended (the process is stopping): nothing learnt."""
        self.in_flight[dest] -= 1
        if not self.in_flight[dest]:
            del self.in_flight[dest]
        breaker = self.breakers.get(dest)
        if breaker is not None:
            breaker.probing = False

    def finished(self, dest: str, *, ok: bool, now: float) -> bool:
        """Notes an attempt's end; True when this failure opened (or reopened) the breaker."""
        self.in_flight[dest] -= 1
        if not self.in_flight[dest]:
            del self.in_flight[dest]
        if ok:
            self.breakers.pop(dest, None)
            return False
        breaker = self.breakers.setdefault(dest, _Breaker())
        breaker.failures += 1
        if breaker.failures < self.threshold:
            return False
        was_probing, breaker.probing = breaker.probing, False
        if breaker.failures == self.threshold or was_probing:
            breaker.cooldown_s = min(self.max_cooldown_s, max(self.first_cooldown_s, 2 * breaker.cooldown_s))
            breaker.open_until = now + breaker.cooldown_s
            return True
        return False

    def backed_off(self, now: float) -> list[str]:
        """The destinations whose breaker is open now."""
        return sorted(dest for dest, breaker in self.breakers.items() if breaker.open_until > now)

    @staticmethod
    def _closed_to(breaker: _Breaker, now: float) -> bool:
        return breaker.open_until > now or breaker.probing
