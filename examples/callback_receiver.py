"""A callback receiver for trying batchgate out: verifies each callback's signature and prints it.

BATCHGATE_WEBHOOK_SECRET=whsec_... python examples/callback_receiver.py [PORT]

The key's webhook secret is what `batchgate keys create` prints beside its secret (a key made
before batchgate 0.2 has none: give its secret as BATCHGATE_SECRET instead).
"""

from __future__ import annotations

import json
import os
import sys

from aiohttp import web

from batchgate import webhooks

SECRET = os.environ.get("BATCHGATE_WEBHOOK_SECRET") or os.environ["BATCHGATE_SECRET"]


async def callback(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        webhooks.verify(SECRET, request.headers, body)
    except webhooks.InvalidSignature as exc:
        print(f"refused a callback: {exc}", flush=True)
        return web.Response(status=401)
    results = json.loads(body)
    print(f"callback {request.headers['webhook-id']} for batch {results['asyncId']}:", flush=True)
    print(json.dumps(results, indent=2), flush=True)
    return web.Response(status=204)


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/{tail:.*}", callback)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 9000)
