"""`graphsvc triton …`: serve the model repository with the local tritonserver, wait for it, show status."""

from __future__ import annotations

import logging
import signal
import threading

import click

from graphsvc import settings as env
from graphsvc.clitools import ReportingGroup, env_option, settings_from
from graphsvc.errors import GraphsvcError, TritonUnavailable


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("graphsvc").setLevel(logging.INFO if verbose else logging.WARNING)


@click.group("triton", cls=ReportingGroup)
def triton() -> None:
    """Triton Inference Server: serve the model repository, wait for it, show its status."""



@triton.command()
@env_option(env.MODEL_REPOSITORY, "--model-repository", type=click.Path(file_okay=False),
            help="Triton model repository to serve.")
@env_option(env.TRITON_HOST, "--host", "--bind", "bind_address",
            help="Address the HTTP, gRPC and metrics endpoints listen on (0.0.0.0: all).")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@env_option(env.TRITON_RUNTIME_DIR, "--runtime-dir", type=click.Path(file_okay=False),
            help="Work directory for the generated Python-backend repository and the server log.")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="Server log file [default: <runtime-dir>/tritonserver.log].")
@click.option("--model-control-mode", type=click.Choice(["poll", "none"]), default="poll", show_default=True,
              help="poll: new versions and changed models in the repository are loaded without a restart; "
              "none: serve what is there at start.")
@click.option("--poll-secs", "--repository-poll-secs", type=click.FloatRange(min=0.2), default=5.0,
              show_default=True, help="How often poll mode looks at the repository.")
@click.option("--timeout", "startup_timeout", default=120.0, show_default=True, type=float,
              help="Seconds to wait for the server and its models to become ready.")
@click.option("-v", "--verbose", is_flag=True, help="Log what graphsvc does.")
def serve(model_repository, bind_address, http_port, grpc_port, metrics_port, runtime_dir, log_file,
          model_control_mode, poll_secs, startup_timeout, verbose):
    """Run tritonserver in the foreground on the model repository (stop with Ctrl-C or SIGTERM)."""
    from graphsvc.triton.process import StartupCancelled, TritonServer

    _setup_logging(verbose)
    logging.getLogger("graphsvc.triton.process").setLevel(logging.INFO)  # live updates are worth a line each
    server = TritonServer(
        model_repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        bind_address=bind_address,
        runtime_dir=runtime_dir,
        log_path=log_file,
        poll_secs=poll_secs if model_control_mode == "poll" else None,
    )
    # The handler only sets a flag: an exception raised from a signal handler can land inside
    # subprocess.Popen.poll() while it holds its waitpid lock, and every later wait() then hangs.
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stopping.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        started = False
        try:
            server.start()
            started = True
            server.wait_ready(startup_timeout, cancel=stopping)
        except StartupCancelled:
            pass
        except GraphsvcError as exc:
            first = str(exc).splitlines()[0]
            where = f" (log: {server.log_path})" if started and server.log_path else ""
            raise GraphsvcError(f"{first}{where}") from None
        if not stopping.is_set():
            models = ", ".join(server.models) or "none"
            click.echo(
                f"Triton ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}\n"
                f"models: {models}\nlog: {server.log_path}"
                + (f"\nwatching {server.model_repository} every {poll_secs:g}s"
                   if model_control_mode == "poll" else ""),
                err=True,
            )
        while not stopping.is_set():
            if not server.is_running():
                code = server.stop()
                raise TritonUnavailable(server.grpc_url, f"tritonserver exited unexpectedly with code {code}; "
                                                         f"see {server.log_path}")
            stopping.wait(0.5)
        click.echo("stopping Triton…", err=True)
    finally:
        try:
            server.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@triton.command()
@click.option("--url", default=None,
              help="grpc://host:port or http://host:port [default: graphsvc --triton-url, env GRAPHSVC_TRITON_URL].")
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds to wait.")
@click.pass_context
def wait(ctx, url, timeout):
    """Wait until the server and all its models are ready (exit 1 on timeout)."""
    from graphsvc.triton.client import TritonClient

    url = url or settings_from(ctx).triton_url
    with TritonClient(url) as client:
        statuses = client.wait_ready(timeout)
    ready = [s.name for s in statuses if s.ready]
    click.echo(f"Triton ready at {client.url}: {len(ready)} model(s) ready", err=True)


@triton.command()
@click.option("--url", default=None,
              help="grpc://host:port or http://host:port [default: graphsvc --triton-url, env GRAPHSVC_TRITON_URL].")
@click.pass_context
def status(ctx, url):
    """List the server's models and whether each is ready."""
    from graphsvc.triton.client import TritonClient

    url = url or settings_from(ctx).triton_url
    with TritonClient(url, retries=1) as client:
        statuses = client.models()
        server_ready = client.is_ready()
    click.echo(f"server {client.url}: {'ready' if server_ready else 'NOT ready'}")
    if not statuses:
        click.echo("no models")
        return
    width = max(len("MODEL"), *(len(s.name) for s in statuses))
    click.echo(f"{'MODEL':<{width}}  {'VERSION':<7}  {'STATE':<11}  REASON")
    for s in statuses:
        click.echo(f"{s.name:<{width}}  {s.version or '-':<7}  {s.state or 'not loaded':<11}  {s.reason}".rstrip())
