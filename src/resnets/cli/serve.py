"""``resnets serve``: models behind HTTP, with dynamic batching (see :mod:`resnets.serve`)."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MissingExtra
from ..serve.config import MODEL_NAME, ServeConfig, check_name, served_name
from .common import (
    UsageError, add_model_options, add_precision_options, model_and_weights, say_what_runs, with_flags,
)

if TYPE_CHECKING:
    from ..pipeline import Inference

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULTS = ServeConfig()  # the service's defaults are the CLI's
#: Where the API key comes from when --api-key and --api-key-file are not given.
API_KEY_VARIABLE = "RESNETS_API_KEY"

log = logging.getLogger("resnets.serve")


#: The options given once for every model, or once per --weights.
PER_MODEL = ("weights", "model", "precision", "backend")


class PerModel(argparse.Action):
    """An option that may be repeated: the values given, in order (the default until one is given)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: str,
                 option_string: str | None = None) -> None:
        given = getattr(namespace, self.dest)
        setattr(namespace, self.dest, (given if isinstance(given, list) else []) + [values])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP (dynamic batching, web page, metrics, KServe/Triton)",
                       description="Serve models over HTTP: POST /v1/predict, /v1/features and /v1/explain, the Open "
                                   "Inference Protocol (KServe V2, Triton) under /v2, a web page at /, /healthz, "
                                   "/readyz, /metrics, /docs. The model and weights options are predict's; repeat "
                                   "--weights [NAME=]WEIGHTS to serve several models (named by their weights unless "
                                   "NAME= says), each with its own --model, --precision and --backend when those are "
                                   "given once per --weights (once: for all). It runs on the CPU. Needs pip install "
                                   "'resnets[serve]'.")
    p.register("action", None, PerModel)  # the model options below may repeat, one per model
    add_model_options(p)
    add_precision_options(p, int8_calibrates_on_inputs=False)
    p.register("action", None, argparse._StoreAction)
    p.add_argument("--eager-extras", action="store_true", default=DEFAULTS.eager_extras,
                   help="run /v1/features and /v1/explain on the eager fp32 network, exact as 'resnets features' "
                        "and 'resnets explain' (default: the way the model runs, --precision and --backend)")
    p.add_argument("--calibration", metavar="DIR", default=None,
                   help="images for int8 calibration (required with --precision int8)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--max-batch", type=int, default=DEFAULTS.max_batch,
                   help=f"most images per model call (default: {DEFAULTS.max_batch})")
    p.add_argument("--max-delay-ms", type=float, default=DEFAULTS.max_delay_ms,
                   help=f"how long the first request of a batch waits for others (default: {DEFAULTS.max_delay_ms:g})")
    p.add_argument("--max-queue", type=int, default=DEFAULTS.max_queue,
                   help=f"requests inside the server at once, counted once their body is in; more get 503 with "
                        f"Retry-After (default: {DEFAULTS.max_queue})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULTS.max_upload_mb,
                   help=f"largest request body in MiB (default: {DEFAULTS.max_upload_mb:g})")
    p.add_argument("--decode-memory-mb", type=float, default=DEFAULTS.decode_memory_mb,
                   help="MiB for decoding images at once, all requests together, estimated from each image's size "
                        "and mode before decoding: bounds the memory decoding takes; a request waits for its share, "
                        f"an image that needs more than all of it gets 413 (default: {DEFAULTS.decode_memory_mb:g})")
    p.add_argument("--header-timeout", type=float, default=DEFAULTS.header_timeout,
                   help="seconds a connection may take to send a request's headers, from connecting or from the "
                        f"previous answer; then it is closed (default: {DEFAULTS.header_timeout:g})")
    p.add_argument("--keep-alive", type=float, default=DEFAULTS.keep_alive,
                   help=f"seconds an idle kept-alive connection stays open (default: {DEFAULTS.keep_alive:g})")
    p.add_argument("--body-timeout", type=float, default=DEFAULTS.body_timeout,
                   help="seconds a request body may go without data; then 408 and the connection is closed "
                        f"(default: {DEFAULTS.body_timeout:g})")
    p.add_argument("--min-upload-rate", type=float, default=DEFAULTS.min_upload_rate, metavar="KIB_S",
                   help="KiB/s a request body must average once it has taken --body-timeout seconds, else 408 "
                        f"(default: {DEFAULTS.min_upload_rate:g})")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (or 'X-API-Key: KEY') on /v1/* and /metrics; visible "
                        f"to every local user in ps: prefer --api-key-file or ${API_KEY_VARIABLE} (default: "
                        f"${API_KEY_VARIABLE} if set, else none: open to every client that can reach it)")
    p.add_argument("--api-key-file", metavar="FILE", default=None,
                   help="read the API key from FILE (its first line; keep it readable by you alone) (default: "
                        f"--api-key, else ${API_KEY_VARIABLE})")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers,
                   help=f"threads decoding images (default: {DEFAULTS.workers})")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: a Ray Serve deployment of --replicas copies of the service, "
                        "each batching its own requests (pip install 'resnets[serve-ray]') (default: local)")
    p.add_argument("--replicas", default="1",
                   help="with --engine ray: copies of the service, N or auto (autoscaled on the requests in "
                        "progress, up to the cluster's CPUs); one CPU each (default: 1)")
    p.add_argument("--address", default=None,
                   help="with --engine ray: the running Ray cluster to use, auto or HOST:PORT; every node must see "
                        "the weights at the same paths (default: start Ray on this machine)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="on SIGTERM/Ctrl-C, seconds to let in-flight requests finish (default: 30)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="uvicorn's and the service's log level (default: info)")
    p.add_argument("--access-log", action="store_true", help="log every request (default: errors and start-up only)")
    p.set_defaults(func=run_serve)


def api_key(args: argparse.Namespace) -> str | None:
    """The API key from --api-key, --api-key-file or $RESNETS_API_KEY (one of the flags at most)."""
    if args.api_key is not None and args.api_key_file is not None:
        raise UsageError("give --api-key or --api-key-file, not both")
    if args.api_key_file is None:
        key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_VARIABLE)
        if key is not None and not key.strip():
            raise UsageError(f"the API key is empty ({'--api-key' if args.api_key is not None else API_KEY_VARIABLE})")
        return key
    path = Path(args.api_key_file)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--api-key-file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    key = lines[0].strip() if lines else ""
    if not key:
        raise UsageError(f"--api-key-file {path}: its first line is empty")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("--api-key-file %s can be read by other users (chmod 600 it)", path)
    return key


def model_options(args: argparse.Namespace) -> list[tuple[str, argparse.Namespace]]:
    """Each model the options name: its name (NAME= of --weights NAME=WEIGHTS, else from the weights) and its
    own options (--weights, and --model, --precision and --backend: given once for all, or once per --weights)."""
    listed = {dest: getattr(args, dest) if isinstance(getattr(args, dest), list) else [getattr(args, dest)]
              for dest in PER_MODEL}
    count = len(listed["weights"])
    for dest, values in listed.items():
        if len(values) not in (1, count):
            raise UsageError(f"give --{dest} once, or once per --weights ({count}), not {len(values)} times")
    models: list[tuple[str, argparse.Namespace]] = []
    for i in range(count):
        one = argparse.Namespace(**{**vars(args), **{dest: values[i % len(values)] for dest, values in listed.items()}})
        name, equals, weights = one.weights.partition("=")
        if equals and MODEL_NAME.fullmatch(name) and not Path(one.weights).exists():
            one.weights = weights
        else:
            network, weights = model_and_weights(one)
            name = served_name(weights, network)
        try:
            check_name(name)
        except ValueError as e:
            raise UsageError(f"--weights {one.weights}: {e}") from None
        if name in (n for n, _ in models):
            raise UsageError(f"two models named {name!r}: name them with --weights NAME=WEIGHTS")
        models.append((name, one))
    return models


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """The server's configuration from the parsed options; usage errors name the flags."""
    from ..inference.table import precision

    models = model_options(args)
    for _, one in models:
        entry = precision(one.precision)
        if "cpu" not in entry.devices:
            raise UsageError(f"--precision {one.precision} does not run on the CPU, where resnets serve runs"
                             + (f" ({entry.elsewhere})" if entry.elsewhere else ""))
        if entry.needs_calibration and not args.calibration:
            raise UsageError(f"--precision {one.precision} needs --calibration DIR: images like the ones the "
                             "service will see")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must lie in 0..65535, got {args.port}")
    names = [name for name in vars(DEFAULTS) if name != "api_key"]
    first = models[0][1]  # the precision and backend of ServeConfig: the first model's
    try:
        return ServeConfig(**{name: getattr(first, name) for name in names}, api_key=api_key(args))
    except ValueError as e:
        raise UsageError(with_flags(str(e), names)) from None


def load_served(args: argparse.Namespace) -> Inference:
    """The :class:`~resnets.pipeline.Inference` of one model's options (one --weights): the network the weights
    name unless --model says, as every command decides it."""
    from ..data.images import find_images
    from ..pipeline import load_inference

    ((_, one),) = model_options(args)
    calibration = find_images(one.calibration) if one.calibration else None
    inf = load_inference(*model_and_weights(one), one.precision, calibration=calibration, device="cpu",
                         backend=one.backend)
    say_what_runs(one, inf)
    return inf


def replicas(args: argparse.Namespace) -> int | str:
    """--replicas as a count or ``auto``, checking that the Ray options come with --engine ray."""
    if args.engine != "ray" and (args.address is not None or args.replicas != "1"):
        raise UsageError("--replicas and --address need --engine ray")
    if args.replicas == "auto":
        return "auto"
    if not args.replicas.isdigit() or int(args.replicas) < 1:
        raise UsageError(f"--replicas must be a count >= 1 or auto, got {args.replicas!r}")
    return int(args.replicas)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import create_app
        from ..serve.connections import uvicorn_options
    except ImportError as e:
        raise MissingExtra(f"resnets serve needs the 'serve' extra: pip install 'resnets[serve]' ({e})") from e
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    config = serve_config(args)
    copies = replicas(args)
    if args.host not in LOOPBACK:
        log.warning("binding %s: the service is reachable from other machines%s", args.host,
                    "" if config.api_key else " without an API key")
    models = {name: functools.partial(load_served, one) for name, one in model_options(args)}
    if args.engine == "ray":  # each replica builds the app, loading the models itself
        from ..serve.ray_engine import serve_on_ray

        serve_on_ray(functools.partial(create_app, models, config), config, copies, args.host, args.port,
                     args.address, args.shutdown_timeout, args.log_level, args.access_log)
        return 0
    app = create_app(models, config)
    # uvicorn drains on SIGTERM, then raises SIGTERM again under the handler it found; this one makes
    # that a normal return, so a drained server exits 0 as service managers expect.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: log.info("stopped by SIGTERM"))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                    timeout_graceful_shutdown=args.shutdown_timeout, **uvicorn_options(config))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
