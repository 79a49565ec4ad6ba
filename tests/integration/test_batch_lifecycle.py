"""A batch from run to callback over real HTTP, on a real SQLite file."""

from __future__ import annotations

from batchgate import webhooks
from batchgate.settings import Settings

from support import live_server, receiver


async def test_a_batch_runs_in_order_and_calls_back_signed(settings: Settings) -> None:
    jobs = [{"namespace": "test", "action": "echo", "params": {"n": n}} for n in range(20)]
    async with receiver() as recv, live_server(settings) as server, server.client() as api:
        async_id = await api.run(jobs, callback_url=recv.url + "/done")
        results = await api.wait(async_id, poll_s=0.02)
        [call] = await recv.wait_for("/done", 1)
    assert [r["response"] for r in results["results"]] == [{"n": n} for n in range(20)]
    assert call.json == results
    webhooks.verify(server.key.webhook_secret, call.headers, call.body)
