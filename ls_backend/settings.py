"""Backend settings, parsed once from environment variables into a typed, frozen object.

Every variable is documented in :data:`ENV_DOC` (the README table and ``docker-compose.yml``
are written from it).  Invalid values raise ``ValueError`` naming the variable, the value and
what is allowed, so a misconfigured server fails at start, not on the first request.

>>> s = Settings.from_env({"MODEL_DIR": "/tmp/m", "TRAIN_EVERY_N_ANNOTATIONS": "5"})
>>> s.train_every_n_annotations, s.model_dir.name
(5, 'm')
>>> Settings.from_env({"BATCH_SIZE": "zero"})
Traceback (most recent call last):
...
ValueError: BATCH_SIZE: 'zero' is not an integer
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Settings", "ENV_DOC"]

# name -> (default shown in docs, description).  Kept next to the parser so they cannot drift.
ENV_DOC: dict[str, tuple[str, str]] = {
    "LABEL_STUDIO_URL": ("(unset)", "Label Studio base URL the backend writes scores to "
                         "(e.g. http://label-studio:8080). Unset: no write-back, predictions only."),
    "LABEL_STUDIO_API_KEY": ("(unset)", "Label Studio API token (legacy token or personal access "
                             "token) used to pull annotated tasks and write scores."),
    "MODEL_DIR": ("./models", "Where per-project state, trained models and span indexes live "
                  "(MODEL_DIR/<project>/); survives restarts."),
    "MODEL_NAME": ("packaged MiniLM", "Backbone to fine-tune: a local Hugging Face path or "
                   "cached name (never downloaded). A fine-tuned token-classification model "
                   "predicts before the first training."),
    "DEVICE": ("auto", "auto, cpu, cuda or cuda:N."),
    "ATTENTION": ("auto", "Attention kernel of the serving model: auto (SDPA where the model "
                  "supports it), sdpa or eager."),
    "TORCH_COMPILE": ("0", "1: torch.compile the serving model (first batches compile for tens "
                      "of seconds; measure on your GPU before turning it on)."),
    "BATCH_SIZE": ("32", "Tasks per batched inference pass (scoring queue drains this many)."),
    "BASIC_AUTH_USER": ("(unset)", "With BASIC_AUTH_PASS: require HTTP basic auth on every route "
                        "(set the same pair in Label Studio's model connection)."),
    "BASIC_AUTH_PASS": ("(unset)", "See BASIC_AUTH_USER."),
    "TRAIN_EVERY_N_ANNOTATIONS": ("10", "Start a background training after this many "
                                  "ANNOTATION_CREATED/UPDATED webhooks of a project; 0 = only on "
                                  "START_TRAINING."),
    "TRAIN_EPOCHS": ("3", "Epochs per training run."),
    "TRAIN_MAX_STEPS": ("0", "Stop training after this many optimizer steps (0 = no limit); for "
                       "smoke tests and CPU demos."),
    "TRAIN_BATCH_SIZE": ("16", "Training batch size."),
    "TRAIN_LR": ("3e-4", "Peak learning rate (AdamW, linear schedule; 3e-4 suits the small MiniLM backbone, use ~5e-5 for BERT-base-size models)."),
    "TRAIN_MIN_ANNOTATED": ("1", "Refuse to train a project with fewer annotated tasks."),
    "TRAIN_FOLDS": ("3", "After a training, cross-fit K fold models in the background so the DEP "
                    "written on annotated tasks comes from a model that never saw their labels "
                    "(K more trainings on (K-1)/K of the tasks each; the full model serves "
                    "meanwhile). 0 = off: DEP from the model trained on the tasks (in-sample, "
                    "marked so in the task meta)."),
    "TRAIN_ENGINE": ("local", "Where the cross-fit folds of TRAIN_FOLDS train: local (one after "
                     "another in the backend process) or ray (one Ray task per fold, in parallel, "
                     "a GPU each when the cluster has GPUs; needs pip install "
                     "'ner-quality[ray]')."),
    "RAY_ADDRESS": ("(unset)", "With TRAIN_ENGINE=ray: the Ray cluster (host:port or "
                    "ray://host:10001); unset starts a local Ray for each cross-fit."),
    "QUEUE_SIZE": ("10000", "Maximum pending live/re-score jobs in the persistent job queue "
                   "(MODEL_DIR/queue.sqlite3); further webhooks answer 503."),
    "WRITE_QUEUE_SIZE": ("200000", "Maximum pending score writes (after a training, side "
                         "products of /predict); beyond it they are refused and reported in "
                         "/status."),
    "QUEUE_MAX_ATTEMPTS": ("8", "Tries of a failing job (exponential backoff 2, 4, ... s, at "
                           "most 300 s) before it is kept as failed in /status."),
    "MAX_REQUEST_CHARS": ("1000000", "Total text characters of one /predict request; larger "
                          "requests answer 413 at once with the numbers."),
    "MAX_BODY_BYTES": ("67108864", "Largest request body (bytes); larger bodies answer 413."),
    "PREDICT_CONCURRENCY": ("2", "Model passes of /predict requests running at once; more "
                            "wait (see PREDICT_WAIT_S)."),
    "PREDICT_WAIT_S": ("30", "How long a /predict waits for a free model pass before it answers "
                       "503 (Label Studio gives up after 100 s)."),
    "KEEP_MODEL_VERSIONS": ("3", "Trained model versions kept per project (the serving one "
                            "always); older ones and directories left by crashed trainings are "
                            "removed."),
    "SIMILAR_K": ("5", "Similar spans (with a different gold label) stored per annotated span."),
    "MAX_TEXT_CHARS": ("100000", "Tasks with longer text are refused with a per-task error."),
    "MAX_TASKS_PER_REQUEST": ("5000", "Larger /predict batches answer 413."),
    "LOG_LEVEL": ("INFO", "Python logging level (the CLI defaults to WARNING when unset)."),
    "NERQ_CACHE_DIR": ("~/.cache/ner-quality", "CLI sync store root: "
                       "<dir>/<host>/<project>/store.sqlite3."),
    "NERQ_SYNC_SKEW_S": ("300", "Clock-skew margin (s) subtracted from the incremental-sync "
                         "watermark."),
    "NERQ_LS_BIN": ("(unset)", "The label-studio executable the demo starts (default: PATH, "
                    "./.venv-ls, then NERQ_LS_VENV)."),
    "NERQ_LS_VENV": ("$NERQ_CACHE_DIR/label-studio-venv", "Where the demo installs Label "
                     "Studio (its own venv) when it finds none."),
    # read by the process, not by Settings: the image's gunicorn and torch
    "THREADS": ("8", "gunicorn request threads of the one worker process (Dockerfile CMD)."),
    "OMP_NUM_THREADS": ("torch default", "CPU threads of torch; on a shared 2-core host 1 is "
                        "much faster."),
}


def _train_folds(env: Mapping[str, str]) -> int:
    k = _int(env, "TRAIN_FOLDS", 3, minimum=0)
    if k == 1:
        raise ValueError("TRAIN_FOLDS: 1 fold cannot cross-fit; use 0 (off) or at least 2")
    return k


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        val = int(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not an integer") from None
    if val < minimum:
        raise ValueError(f"{name}: {val} is below the minimum {minimum}")
    return val


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: {raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower() or default
    if raw not in allowed:
        raise ValueError(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
    return raw


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        val = float(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a number") from None
    if not val > 0 or val != val or val == float("inf"):
        raise ValueError(f"{name}: {raw!r} must be a positive finite number")
    return val


@dataclass(frozen=True)
class Settings:
    """Typed backend configuration; build it with :meth:`from_env`."""

    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    model_dir: Path = Path("models")
    model_name: str | None = None  # None: packaged MiniLM backbone
    device: str = "auto"
    attention: str = "auto"
    torch_compile: bool = False
    batch_size: int = 32
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = field(default=None, repr=False)
    train_every_n_annotations: int = 10
    train_epochs: int = 3
    train_max_steps: int | None = None
    train_batch_size: int = 16
    train_lr: float = 3e-4
    train_min_annotated: int = 1
    train_folds: int = 3
    train_engine: str = "local"
    ray_address: str | None = None
    queue_size: int = 10000
    write_queue_size: int = 200_000
    queue_max_attempts: int = 8
    max_request_chars: int = 1_000_000
    max_body_bytes: int = 64 * 1024 * 1024
    keep_model_versions: int = 3
    predict_concurrency: int = 2
    predict_wait_s: float = 30.0
    similar_k: int = 5
    max_text_chars: int = 100_000
    max_tasks_per_request: int = 5000
    log_level: str = "INFO"
    log_level_set: bool = field(default=False, repr=False)
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "ner-quality")
    sync_skew_s: int = 300
    retain_memory: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse settings from ``env`` (default ``os.environ``); raise ``ValueError`` on bad values."""
        env = os.environ if env is None else env
        device = env.get("DEVICE", "auto").strip() or "auto"
        if not (device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:")):
            raise ValueError(f"DEVICE: {device!r} is not one of auto, cpu, cuda, cuda:N, mps")
        log_level_set = bool((env.get("LOG_LEVEL") or "").strip())
        log_level = (env.get("LOG_LEVEL", "INFO").strip() or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"LOG_LEVEL: {log_level!r} is not DEBUG, INFO, WARNING, ERROR or CRITICAL")
        user = env.get("BASIC_AUTH_USER") or None
        pw = env.get("BASIC_AUTH_PASS") or None
        if (user is None) != (pw is None):
            raise ValueError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together")
        url = (env.get("LABEL_STUDIO_URL") or "").strip().rstrip("/") or None
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"LABEL_STUDIO_URL: {url!r} must start with http:// or https://")
        max_steps = _int(env, "TRAIN_MAX_STEPS", 0)
        attention = (env.get("ATTENTION") or "auto").strip().lower() or "auto"
        if attention not in ("auto", "sdpa", "eager"):
            raise ValueError(f"ATTENTION: {attention!r} is not one of auto, sdpa, eager")
        return cls(
            label_studio_url=url,
            label_studio_api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            model_dir=Path(env.get("MODEL_DIR") or "models").expanduser(),
            model_name=env.get("MODEL_NAME") or None,
            device=device,
            attention=attention,
            torch_compile=_bool(env, "TORCH_COMPILE", False),
            batch_size=_int(env, "BATCH_SIZE", 32, minimum=1),
            basic_auth_user=user,
            basic_auth_pass=pw,
            train_every_n_annotations=_int(env, "TRAIN_EVERY_N_ANNOTATIONS", 10),
            train_epochs=_int(env, "TRAIN_EPOCHS", 3, minimum=1),
            train_max_steps=max_steps or None,
            train_batch_size=_int(env, "TRAIN_BATCH_SIZE", 16, minimum=1),
            train_lr=_float(env, "TRAIN_LR", 3e-4),
            train_min_annotated=_int(env, "TRAIN_MIN_ANNOTATED", 1, minimum=1),
            train_folds=_train_folds(env),
            train_engine=_choice(env, "TRAIN_ENGINE", "local", ("local", "ray")),
            ray_address=(env.get("RAY_ADDRESS") or "").strip() or None,
            queue_size=_int(env, "QUEUE_SIZE", 10000, minimum=1),
            write_queue_size=_int(env, "WRITE_QUEUE_SIZE", 200_000, minimum=1),
            queue_max_attempts=_int(env, "QUEUE_MAX_ATTEMPTS", 8, minimum=1),
            max_request_chars=_int(env, "MAX_REQUEST_CHARS", 1_000_000, minimum=1),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1024),
            keep_model_versions=_int(env, "KEEP_MODEL_VERSIONS", 3, minimum=1),
            predict_concurrency=_int(env, "PREDICT_CONCURRENCY", 2, minimum=1),
            predict_wait_s=float(_int(env, "PREDICT_WAIT_S", 30, minimum=0)),
            similar_k=_int(env, "SIMILAR_K", 5),
            max_text_chars=_int(env, "MAX_TEXT_CHARS", 100_000, minimum=1),
            max_tasks_per_request=_int(env, "MAX_TASKS_PER_REQUEST", 5000, minimum=1),
            log_level=log_level,
            log_level_set=log_level_set,
            cache_dir=Path(env.get("NERQ_CACHE_DIR") or Path.home() / ".cache" / "ner-quality")
            .expanduser(),
            sync_skew_s=_int(env, "NERQ_SYNC_SKEW_S", 300),
            retain_memory=_bool(env, "NERQ_RETAIN_MEMORY", True),
        )

    @property
    def cli_log_level(self) -> str:
        """The CLI's logging level: ``LOG_LEVEL`` when set, else WARNING."""
        return self.log_level if self.log_level_set else "WARNING"

    @property
    def serving_model_options(self) -> dict[str, Any]:
        """``NerModel.load`` keywords of the models that serve predictions and scores (not of
        the training runs): device, attention kernel, torch.compile."""
        return {"device": self.device, "attention": self.attention,
                "compile": self.torch_compile}

    @property
    def auth_enabled(self) -> bool:
        return self.basic_auth_user is not None and self.basic_auth_pass is not None

    @property
    def label_studio_enabled(self) -> bool:
        return bool(self.label_studio_url and self.label_studio_api_key)

    def public_dict(self) -> dict[str, object]:
        """Settings without secrets (for /status and logs)."""
        out: dict[str, object] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("label_studio_api_key", "basic_auth_pass"):
                v = None if v is None else "***"
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out
