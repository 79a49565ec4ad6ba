"""`batchgate call` and `batchgate submit`: the Python client on the command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from batchgate.cli.options import env_option, option_group
from batchgate.cli.root import main
from batchgate.cli.stores import echo_json
from batchgate.client import ApiError, Client, Unreachable
from batchgate.protocol.errors import is_error_body

T = TypeVar("T")


CLIENT_OPTIONS = option_group(
    env_option("--url", default="http://127.0.0.1:8080", help="batchgate's base URL."),
    env_option("--key", required=True, help="The API key to sign with."),
    env_option("--secret", required=True, help="The key's secret."),
)


def _client_call(fn: Callable[[], T]) -> T:
    """Runs one client call: a wire error is printed as it came, and exits 1."""
    try:
        return fn()
    except ApiError as exc:
        echo_json(exc.body)
        sys.exit(1)
    except Unreachable as exc:
        raise click.ClickException(f"could not reach batchgate: {exc}") from exc


def _read_json(source: str, what: str) -> Any:
    """JSON given inline, as `@file`, or as `-` (standard input)."""
    try:
        if source == "-":
            text = sys.stdin.read()
        elif source.startswith("@"):
            text = Path(source[1:]).read_text(encoding="utf-8")
        else:
            text = source
        return orjson.loads(text)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source[1:]}: {exc.strerror or exc}", param_hint=what) from exc
    except orjson.JSONDecodeError as exc:
        where = "standard input" if source == "-" else source[1:] if source.startswith("@") else "it"
        raise click.BadParameter(f"{where} is not JSON: {exc}", param_hint=what) from exc


@main.command()
@click.argument("namespace")
@click.argument("action")
@click.argument("params", required=False)
@click.option(
    "--idempotency-key", help="Sent as the Idempotency-Key header: give the same one to retry a call safely."
)
@CLIENT_OPTIONS
def call(
    namespace: str,
    action: str,
    params: str | None,
    idempotency_key: str | None,
    url: str,
    key: str,
    secret: str,
) -> None:
    """Makes one signed call and prints the answer, e.g. `batchgate call test ping`.

    PARAMS is a JSON object, `@file` to read it from a file, or `-` to read it from standard input.
    """
    decoded = _read_json(params, "PARAMS") if params else None
    with Client(url, key, secret) as client:
        echo_json(
            _client_call(lambda: client.call(namespace, action, decoded, idempotency_key=idempotency_key))
        )


def _jobs_of(spec: Any, jobs_file: Path) -> tuple[list[Any], dict[str, Any]]:
    """The jobs of a jobs file, and the other params of a whole run request (callbackUrl, concurrency)."""
    if isinstance(spec, list):
        return spec, {}
    if isinstance(spec, dict) and "jobs" in spec:
        return spec["jobs"], spec
    if isinstance(spec, dict) and "namespace" in spec:
        hint = "it holds one job: put it in a list, [{...}]"
    else:
        hint = 'it must hold a list of jobs, or a run request {"jobs": [...]}'
    raise click.BadParameter(f"{jobs_file}: {hint}", param_hint="JOBS_FILE")


@main.command()
@click.argument("jobs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--callback", help="URL to POST the results to when the batch completes.")
@click.option("--wait", is_flag=True, help="Show progress until the batch completes, then print the results.")
@click.option(
    "--fail-on-error", is_flag=True, help="With --wait: exit 3 when any job's response is an error body."
)
@click.option("--concurrency", type=int, help="Jobs run at once (those without dependencies); 1 by default.")
@click.option(
    "--idempotency-key",
    help="Sent as the Idempotency-Key header: the same key again answers the first batch.",
)
@CLIENT_OPTIONS
def submit(
    jobs_file: Path,
    callback: str | None,
    wait: bool,
    fail_on_error: bool,
    concurrency: int | None,
    idempotency_key: str | None,
    url: str,
    key: str,
    secret: str,
) -> None:
    """Submits a batch: JOBS_FILE holds a list of jobs, or a whole run request ({"jobs": [...]}).

    Without --wait, prints the asyncId. Read the results later with
    `batchgate call batch results '{"async": "ASYNC_ID"}'`.
    """
    jobs, options = _jobs_of(_read_json(f"@{jobs_file}", "JOBS_FILE"), jobs_file)
    with Client(url, key, secret) as client:
        async_id = _client_call(
            lambda: client.run(
                jobs,
                callback_url=callback or options.get("callbackUrl"),
                concurrency=concurrency or options.get("concurrency"),
                idempotency_key=idempotency_key,
            )
        )
        if not wait:
            echo_json({"asyncId": async_id})
            return
        click.echo(f"batch {async_id} submitted", err=True)
        with click.progressbar(length=100, label=f"batch {async_id}", file=sys.stderr) as bar:

            def advance(progress: int) -> None:
                bar.update(progress - bar.pos)

            results = _client_call(lambda: client.wait(async_id, on_progress=advance))
    echo_json(results)
    if fail_on_error and any(is_error_body(result["response"]) for result in results["results"]):
        sys.exit(3)
