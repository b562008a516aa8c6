"""Local Label Studio and backend processes for the demo and the benches.

Everything binds to 127.0.0.1.  Label Studio runs from its own virtual environment (it pins its
own Django, pandas, numpy and SDK): :func:`find_label_studio` looks for one, and
:func:`install_label_studio` creates one (``pip install label-studio``, about 1 GB, one to three
minutes) with progress on stderr.  :func:`start_label_studio` starts it on a free port with a
first admin whose email, password and API token are known, and waits for ``/health``;
:func:`stop` ends a process group started here (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DEMO_USER",
    "default_ls_venv",
    "find_label_studio",
    "free_port",
    "install_label_studio",
    "start_backend",
    "start_label_studio",
    "stop",
    "wait_http",
]

#: the admin account of a Label Studio started here
DEMO_USER = "demo@example.com"


def say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, *, timeout: float, ok: Callable[[bytes], bool] = lambda b: True,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200 (and ``ok(body)``); fail early when ``proc`` exits."""
    t0 = time.time()
    last: Exception | None = None
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and ok(r.read()):
                    return
        except Exception as exc:  # noqa: BLE001 - keep polling
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s ({last})")


def default_ls_venv() -> Path:
    """Where :func:`install_label_studio` puts Label Studio: ``$NERQ_LS_VENV``, else
    ``$NERQ_CACHE_DIR/label-studio-venv`` (default ``~/.cache/ner-quality/label-studio-venv``)."""
    env = os.environ.get("NERQ_LS_VENV")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("NERQ_CACHE_DIR") or str(Path.home() / ".cache" / "ner-quality")
    return Path(cache).expanduser() / "label-studio-venv"


def find_label_studio() -> str | None:
    """The ``label-studio`` executable: ``$NERQ_LS_BIN``, else on ``PATH``, else the
    repository's ``.venv-ls``, else :func:`default_ls_venv`; None when there is none."""
    env = os.environ.get("NERQ_LS_BIN")
    if env and Path(env).is_file():
        return env
    here = Path(__file__).resolve().parents[1]
    for cand in (shutil.which("label-studio"), here / ".venv-ls" / "bin" / "label-studio",
                 default_ls_venv() / "bin" / "label-studio"):
        if cand and Path(cand).is_file():
            return str(cand)
    return None


def _ticker(what: str, stop_evt: threading.Event, every: float = 15.0) -> None:
    t0 = time.time()
    while not stop_evt.wait(every):
        say(f"    ... {what} ({time.time() - t0:.0f} s)")


def install_label_studio(venv: Path | None = None) -> str:
    """Create a virtual environment with Label Studio (``pip install -q label-studio``);
    returns its ``label-studio`` executable.  Raises ``RuntimeError`` with pip's last lines when
    the install fails."""
    venv = Path(venv or default_ls_venv())
    exe = venv / "bin" / "label-studio"
    if exe.is_file():
        return str(exe)
    say(f"    installing Label Studio into {venv} (its own venv; ~1 GB download, 1-3 minutes) ...")
    venv.parent.mkdir(parents=True, exist_ok=True)
    stop_evt = threading.Event()
    tick = threading.Thread(target=_ticker, args=("installing Label Studio", stop_evt),
                            daemon=True)
    tick.start()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       stdin=subprocess.DEVNULL, capture_output=True)
        r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", "label-studio"],
                           check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    finally:
        stop_evt.set()
    if r.returncode != 0 or not exe.is_file():
        tail = "\n".join((r.stderr or r.stdout or "").strip().splitlines()[-8:])
        raise RuntimeError(f"pip install label-studio into {venv} failed (exit {r.returncode}):\n"
                           f"{tail}\nInstall it yourself (python3 -m venv V && V/bin/pip install "
                           "label-studio; NERQ_LS_BIN=V/bin/label-studio), or run the demo "
                           "with --report-only")
    say("    Label Studio installed")
    return str(exe)


def start_label_studio(exe: str, data_dir: Path, token: str | None = None, *,
                       password: str | None = None,
                       on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = None,
                       ) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start Label Studio on 127.0.0.1 with a fresh admin and token; returns (proc, url, key).

    The admin is :data:`DEMO_USER` with ``password`` (random when not given).  ``token``: the
    admin's token when ``data_dir`` already holds a server's data (a restart); the token and
    password only apply when the first user is created.  ``on_spawn(proc)`` is called as soon
    as the process exists (before it is up), so a caller interrupted meanwhile can stop it.
    """
    port = free_port()
    token = token or secrets.token_hex(20)
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_USERNAME": DEMO_USER,
        "LABEL_STUDIO_PASSWORD": password or secrets.token_urlsafe(12),
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # no error reports to Sentry (nothing leaves the machine); and Label Studio 1.23 calls
        # sentry_sdk.init(send_default_pii=...), which sentry-sdk 3 refuses: with a DSN set
        # the server would not even start
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }
    log_f = open(data_dir / "label-studio.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )
    if on_spawn is not None:
        on_spawn(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=240, ok=lambda b: b"UP" in b, proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc, url, token


def start_backend(url: str, key: str, model_dir: Path, log_path: Path
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """``ner-quality serve`` on 127.0.0.1 writing to Label Studio ``url``; (proc, backend URL)."""
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": key,
           "MODEL_DIR": str(model_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log_f = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ls_backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )
    burl = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{burl}/health", timeout=120, proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc, burl


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """End the process group of ``proc`` (SIGTERM, SIGKILL after 20 s); None is a no-op."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:  # whatever of the group is left (workers of a server that exited first)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)
