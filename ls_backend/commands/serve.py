"""``ner-quality serve``: run the Label Studio ML backend under gunicorn.

Same as ``gunicorn -w 1 --threads N -b HOST:PORT 'ls_backend.wsgi:app'``.  One worker process
(the scoring queue, trainings and model cache live in it), ``--threads`` request threads.
Settings come from the environment (see ``ls_backend/settings.py``); ``--model-dir`` and
``--label-studio-url`` override ``MODEL_DIR`` / ``LABEL_STUDIO_URL``.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="run the Label Studio ML backend (gunicorn, one worker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; use 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    p.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    p.add_argument("--timeout", type=int, default=120,
                   help="gunicorn worker timeout in seconds (default 120; LS waits 100 s)")
    p.add_argument("--model-dir", default=None, help="override $MODEL_DIR")
    p.add_argument("--label-studio-url", default=None, help="override $LABEL_STUDIO_URL")
    return p


def run(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from ls_backend.settings import Settings

    if not (0 < args.port < 65536):
        raise ValueError(f"--port {args.port} is not a valid TCP port")
    if args.threads < 1:
        raise ValueError(f"--threads {args.threads} must be at least 1")
    env = dict(os.environ)  # the flags override the environment here, never in os.environ
    if args.model_dir:
        env["MODEL_DIR"] = args.model_dir
    if args.label_studio_url:
        env["LABEL_STUDIO_URL"] = args.label_studio_url
    settings = Settings.from_env(env)  # fail fast on bad settings, before binding
    logging.getLogger().setLevel(settings.log_level)

    class _App(BaseApplication):
        def load_config(self) -> None:
            cfg = {
                "bind": f"{args.host}:{args.port}",
                "workers": 1,
                "threads": args.threads,
                "worker_class": "gthread",
                "timeout": args.timeout,
                "graceful_timeout": 10,
                "accesslog": None,
                "loglevel": settings.log_level.lower(),
            }
            for k, v in cfg.items():
                self.cfg.set(k, v)

        def load(self) -> Any:
            from ls_backend.app import create_app

            return create_app(settings)

    logger.info("serving on http://%s:%d (MODEL_DIR=%s, Label Studio %s)", args.host, args.port,
                settings.model_dir, settings.label_studio_url or "not configured")
    _App().run()
    return 0
