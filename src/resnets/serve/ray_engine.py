"""``resnets serve --engine ray``: the same service as a Ray Serve deployment, to grow past one process.

The deployment's ingress is the app :func:`.app.create_app` builds, built again in each replica (Ray Serve's
builder form of ``serve.ingress``), so each replica loads its models and runs its own batchers: requests are
batched inside a replica, and Ray Serve spreads them over the replicas. ``replicas`` is a count, or ``"auto"``:
between one and the cluster's CPUs, Ray Serve's autoscaler aiming at ``max_batch`` requests in progress per replica.
Each replica reserves one CPU (so its model runs on one thread); a replica whose process dies is started again by
Ray Serve, its requests failing meanwhile (a client's retry reaches another replica). Ray Serve's proxy receives the
connections: the header deadline of :mod:`.connections` does not apply there (its keep-alive timeout does); the
body limits, admission, API key and errors are the app's, as in one process. Needs the ``serve-ray`` extra.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from fastapi import FastAPI

from ..errors import BadInput, MissingExtra
from .config import ServeConfig

log = logging.getLogger("resnets.serve")
#: The name of the Ray Serve application and of its deployment.
NAME = "resnets"


def _serve():  # noqa: ANN202 - the module ray.serve
    try:
        from ray import serve
    except ImportError as e:
        raise MissingExtra(f"engine='ray' serves through Ray Serve: pip install 'resnets[serve-ray]' ({e})") from e
    return serve


def deployment_options(replicas: int | str, config: ServeConfig, cpus: float) -> dict:
    """Ray Serve's options for the deployment: ``replicas`` fixed, or ``"auto"`` (autoscaled up to ``cpus``)."""
    if replicas == "auto":
        scaling = {"autoscaling_config": {"min_replicas": 1, "max_replicas": max(1, int(cpus)),
                                          "target_ongoing_requests": config.max_batch}}
    elif isinstance(replicas, int) and replicas >= 1:
        scaling = {"num_replicas": replicas}
    else:
        raise BadInput(f"replicas= must be a count >= 1 or 'auto', got {replicas!r}")
    return {"name": NAME, "max_ongoing_requests": config.max_queue, "ray_actor_options": {"num_cpus": 1},
            **scaling}


def serve_on_ray(build: Callable[[], FastAPI], config: ServeConfig, replicas: int | str = 1,
                 host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
                 shutdown_timeout: float = 30.0, log_level: str = "info", access_log: bool = False) -> None:
    """Serve the app ``build`` makes (a picklable function: it runs in each replica) on Ray Serve at
    ``host:port`` until SIGTERM or Ctrl-C: on the Ray cluster at ``address`` (``auto``, ``HOST:PORT``), else on
    one started on this machine."""
    serve = _serve()
    import ray

    from ..ray.jobs import connected

    with connected(address):
        options = deployment_options(replicas, config, ray.cluster_resources().get("CPU", 1))
        def build_app() -> FastAPI:  # a function: serve.ingress calls it in each replica (a partial it would not)
            return build()

        ingress = serve.deployment(serve.ingress(build_app)(), graceful_shutdown_timeout_s=shutdown_timeout,
                                   **options)
        logs = {"log_level": log_level.upper(), "enable_access_log": access_log}
        logging.getLogger("ray.serve").setLevel(log_level.upper())  # this driver's own Serve messages too
        serve.start(http_options={"host": host, "port": port, "keep_alive_timeout_s": config.keep_alive},
                    logging_config=logs)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            serve.run(ingress.bind(), name=NAME, route_prefix="/", logging_config=logs)
            log.info("serving on Ray Serve at http://%s:%d/ (%s)", host, port,
                     f"{replicas} replicas" if replicas != "auto" else "replicas autoscaled")
            signal.pause()
        except KeyboardInterrupt:
            log.info("stopping: draining the replicas")
        finally:
            signal.signal(signal.SIGTERM, previous)
            serve.shutdown()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
