"""Peak memory and CPU time of the processes under test, sampled with psutil in a thread.

Each group is reported on its own: the service's processes (each role with its descendants,
such as Celery's pool) and each piece of infrastructure (Redis, the PostgreSQL processes of the
run's database). RSS is summed per group at each sample; for multi-process infrastructure PSS is
reported too, since PostgreSQL's shared buffers appear in the RSS of every one of its processes.
Without psutil (the test extra alone) every figure is None.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - the bench extra is not installed
    psutil = None

MB = 1024 * 1024


@dataclass
class Group:
    roles: dict[str, int]  # role -> root pid
    descendants: bool = True  # include each root's children (a worker pool)
    pss: bool = False  # also sum PSS (multi-process servers sharing memory)


@dataclass
class _Peaks:
    rss: float = 0.0
    pss: float = 0.0
    by_role: dict[str, float] = field(default_factory=dict)


class Sampler:
    def __init__(self, groups: dict[str, Group], interval_s: float = 0.1) -> None:
        self.groups = groups
        self.interval_s = interval_s
        self._peaks = {name: _Peaks() for name in groups}
        self._cpu0: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self.samples = 0

    @staticmethod
    def available() -> bool:
        return psutil is not None

    def _processes(self, group: Group) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for role, pid in group.roles.items():
            try:
                root = psutil.Process(pid)
                found[role] = [root, *(root.children(recursive=True) if group.descendants else [])]
            except psutil.Error:
                found[role] = []
        return found

    def _cpu(self) -> dict[int, float]:
        times: dict[int, float] = {}
        for group in self.groups.values():
            for processes in self._processes(group).values():
                for process in processes:
                    try:
                        cpu = process.cpu_times()
                        times[process.pid] = cpu.user + cpu.system
                    except psutil.Error:
                        continue
        return times

    def _sample(self) -> None:
        for name, group in self.groups.items():
            peaks = self._peaks[name]
            rss_total = pss_total = 0.0
            for role, processes in self._processes(group).items():
                rss_role = 0.0
                for process in processes:
                    try:
                        if group.pss:
                            memory = process.memory_full_info()
                            pss_total += memory.pss
                        else:
                            memory = process.memory_info()
                        rss_role += memory.rss
                    except psutil.Error:
                        continue
                rss_total += rss_role
                peaks.by_role[role] = max(peaks.by_role.get(role, 0.0), rss_role)
            peaks.rss = max(peaks.rss, rss_total)
            peaks.pss = max(peaks.pss, pss_total)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if psutil is None:
            return
        self._cpu0 = self._cpu()
        self._thread.start()

    def stop(self) -> dict[str, dict[str, Any] | None]:
        """Per group: peak RSS (and PSS) in MB, each role's peak RSS, CPU seconds used meanwhile."""
        if psutil is None:
            return dict.fromkeys(self.groups)
        self._stop.set()
        self._thread.join()
        self._sample()
        cpu1 = self._cpu()
        report: dict[str, dict[str, Any] | None] = {}
        for name, group in self.groups.items():
            pids = {p.pid for processes in self._processes(group).values() for p in processes}
            cpu = sum(cpu1[pid] - self._cpu0.get(pid, 0.0) for pid in pids if pid in cpu1)
            peaks = self._peaks[name]
            report[name] = {
                "peak_rss_mb": round(peaks.rss / MB, 1),
                "peak_pss_mb": round(peaks.pss / MB, 1) if group.pss else None,
                "peak_rss_mb_by_role": {role: round(v / MB, 1) for role, v in peaks.by_role.items()},
                "cpu_s": round(cpu, 3),
            }
        return report
