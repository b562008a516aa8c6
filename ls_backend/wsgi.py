"""WSGI entry point: ``gunicorn -w 1 --threads 8 'ls_backend.wsgi:app'``.

Use ONE worker process: the scoring queue, training threads and model cache live in the
process (threads serve concurrent requests).  Settings come from the environment
(:class:`ls_backend.settings.Settings`); no model is loaded and no connection opened here.
"""

from __future__ import annotations

import logging
import os

from .app import create_app
from .settings import Settings

settings = Settings.from_env()
if not logging.getLogger().handlers:
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
    )
app = create_app(settings)
