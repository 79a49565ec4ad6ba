"""The `batchgate` command: serve, worker, migrate, purge, keys, batches, deliveries, call, submit.

Every option of `serve` and `worker` can also be set in the environment as `BATCHGATE_<OPTION>`
(e.g. `BATCHGATE_DB`). A user's mistake (a database that cannot be opened, a file that is not
JSON, a server that is not there) is one clear line and a non-zero exit, never a traceback.
One module a group of commands; importing them registers them on `main`.
"""

from batchgate.cli import client, database, keys, operators, serving
from batchgate.cli.root import main

__all__ = ["client", "database", "keys", "main", "operators", "serving"]
