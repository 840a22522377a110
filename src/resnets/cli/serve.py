"""``resnets serve``: a model behind HTTP, with dynamic batching (see :mod:`resnets.serve`)."""

from __future__ import annotations

import argparse
import logging
import signal

from ..choices import BACKEND_CHOICES, PRECISIONS
from ..serve.config import ServeConfig
from .common import BACKEND_HELP

CPU_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp16")  # the service runs on the CPU
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULTS = ServeConfig()  # the service's defaults are the CLI's


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (dynamic batching, web page, metrics)",
                       description="Serve MODEL over HTTP: POST /v1/predict and /v1/features, a web page at /, "
                                   "/healthz, /readyz, /metrics, /docs. Needs pip install 'resnets[serve]'.")
    p.add_argument("--model", default="resnet50", help="model name from 'resnets list' (default: resnet50)")
    p.add_argument("--weights", required=True,
                   help="registry name from 'resnets weights list', 'imagenet', hf-hub:ORG/NAME[@REVISION], a local "
                        "file, or 'none' (random weights, for load tests) (required)")
    p.add_argument("--precision", choices=CPU_PRECISIONS, default=DEFAULTS.precision,
                   help="fp32 (eager unless --backend), or " + "/".join(CPU_PRECISIONS[1:]) + " through "
                        f"resnets.optimize (built at start-up) (default: {DEFAULTS.precision})")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=DEFAULTS.backend, help=BACKEND_HELP)
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
                   help=f"requests inside the server at once; more get 503 with Retry-After (default: "
                        f"{DEFAULTS.max_queue})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULTS.max_upload_mb,
                   help=f"largest request body in MiB (default: {DEFAULTS.max_upload_mb:g})")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (or 'X-API-Key: KEY') on /v1/* and /metrics "
                        "(default: none, open to every client that can reach it)")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers,
                   help=f"threads decoding images (default: {DEFAULTS.workers})")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="on SIGTERM/Ctrl-C, seconds to let in-flight requests finish (default: 30)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="uvicorn's and the service's log level (default: info)")
    p.add_argument("--access-log", action="store_true", help="log every request (default: errors and start-up only)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from .common import UsageError, with_flags

    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as e:
        raise RuntimeError(f"resnets serve needs the 'serve' extra: pip install 'resnets[serve]' ({e})") from e
    from ..data.images import find_images
    from ..pipeline import load_inference

    from ..inference.table import precision

    if precision(args.precision).needs_calibration and not args.calibration:
        raise UsageError(f"--precision {args.precision} needs --calibration DIR: images like the ones the service "
                         "will see")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must lie in 0..65535, got {args.port}")
    try:
        config = ServeConfig(args.max_batch, args.max_delay_ms, args.max_queue, args.max_upload_mb, args.api_key,
                             args.workers, args.precision, args.backend, args.eager_extras)
    except ValueError as e:
        raise UsageError(with_flags(str(e), vars(DEFAULTS))) from None
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    log = logging.getLogger("resnets.serve")
    if args.host not in LOOPBACK:
        log.warning("binding %s: the service is reachable from other machines%s", args.host,
                    "" if args.api_key else " without an API key")
    calibration = find_images(args.calibration) if args.calibration else None
    inf = load_inference(args.model, args.weights, args.precision, calibration=calibration, device="cpu",
                         backend=args.backend)
    log.info("serving %s", inf.describe())
    app = create_app(inf, config)
    # uvicorn drains on SIGTERM, then raises SIGTERM again under the handler it found; this one makes
    # that a normal return, so a drained server exits 0 as service managers expect.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: log.info("stopped by SIGTERM"))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                    timeout_graceful_shutdown=args.shutdown_timeout)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
