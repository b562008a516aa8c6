"""Shared test fixtures and paths.

``SHARED_DATA`` is ``../shared/data`` beside the repository (override with
``NERQ_SHARED_DATA``); tests that need it skip cleanly when it is absent.

Real processes: :func:`start_process` (any server, e.g. ``ner-quality serve``) and a real
Label Studio server: fixtures ``label_studio`` (shared, session-wide; ``.url``, ``.token``,
``.data_dir``, ``.stop()``, ``.start()``), ``ls_api`` (an ``analysis.labelstudio.LabelStudioAPI``
for it), ``ls_project`` (factory of fresh projects) and ``label_studio_factory`` (extra,
private servers).  Tests using them are marked ``integration`` automatically and skip when
the Label Studio executable (``$NERQ_LS_BIN``) is missing.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NERQ_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(*parts: str) -> Path:
    """Path of a file under the shared corpora, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared corpus file {path} not present")
    return path


@pytest.fixture
def shared() -> type:
    """Access to ``shared_file`` inside tests: ``shared.file("conll2003", "test.conll")``."""

    class _Shared:
        root = SHARED_DATA
        file = staticmethod(shared_file)

    return _Shared


# ============================================================================ real processes
#
# ``start_process`` starts any server as a real child process (own process group, output to a
# temp log file) and waits for its health URL; the handle's ``stop()`` sends SIGTERM to the
# whole group.  Logs of processes alive during a failing test are appended to its report.
# The Label Studio fixtures below build on it.


_PROCESSES: list[ProcessHandle] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_get(
    url: str, *, timeout: float = 3.0, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """``(status, body)`` of a GET; status 0 when nothing answered."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback only
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class ProcessHandle:
    """A server started by :func:`start_process`.

    Attributes: ``cmd``, ``env`` (the full environment), ``health_url``, ``log_path``,
    ``proc`` (``subprocess.Popen`` or None when stopped), ``name``.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str],
        health_url: str | None,
        *,
        name: str,
        cwd: str | os.PathLike[str] | None = None,
        ready: Callable[[int, bytes], bool] | None = None,
    ) -> None:
        self.cmd = [str(c) for c in cmd]
        self.env = dict(env)
        self.health_url = health_url
        self.name = name
        self.cwd = cwd
        self.ready = ready or (lambda status, body: 200 <= status < 300)
        fd, path = tempfile.mkstemp(prefix=f"nerq-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.stopped_at = 0.0  # time.time() of the last stop
        _PROCESSES.append(self)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, tail: int | None = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text if tail is None else text[-tail:]

    def start(self, timeout: float = 60.0) -> ProcessHandle:
        """Start (or restart) the process and wait until ``health_url`` answers 2xx."""
        if self.alive:
            return self
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(  # noqa: S603 - a command the test chose
                self.cmd, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.started_at = time.monotonic()
        deadline = self.started_at + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                self.stopped_at = time.time()
                raise RuntimeError(
                    f"{self.name} exited with code {rc} during start-up; log {self.log_path}:\n"
                    f"{self.log_text()}"
                )
            if self.health_url is None:
                if time.monotonic() - self.started_at > 0.5:
                    return self
            else:
                status, body = http_get(self.health_url, timeout=2.0)
                if self.ready(status, body):
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not answer {self.health_url} within {timeout:.0f} s; "
                    f"log {self.log_path}:\n{self.log_text()}"
                )
            time.sleep(0.25)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after ``timeout`` s; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        self.stopped_at = time.time()
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # reap the rest of the group (children that ignored SIGTERM)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return proc.returncode

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} log={self.log_path}>"


def start_process(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    health_url: str | None = None,
    timeout: float = 60.0,
    *,
    name: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    inherit_env: bool = True,
) -> ProcessHandle:
    """Start ``cmd`` as a real process and wait for ``health_url`` to answer 2xx.

    ``env`` is added to ``os.environ`` (``inherit_env=False``: used alone).  Output goes to a
    temp log file (``handle.log_path``), shown when start-up fails and in the report of a test
    that fails while the process runs.  Call ``handle.stop()`` (e.g. in a fixture's teardown);
    leftovers are stopped at interpreter exit.

    >>> import sys
    >>> h = start_process([sys.executable, "-c", "import time; time.sleep(30)"], name="sleeper")
    >>> h.alive, h.stop() is not None, h.alive
    (True, True, False)
    """
    full = dict(os.environ) if inherit_env else {}
    full.update({k: str(v) for k, v in (env or {}).items()})
    handle = ProcessHandle(cmd, full, health_url, name=name or Path(str(cmd[0])).name, cwd=cwd)
    return handle.start(timeout)


@atexit.register
def _stop_all_processes() -> None:
    for h in list(_PROCESSES):
        try:
            h.stop(timeout=10)
            if not os.environ.get("NERQ_KEEP_LOGS"):
                h.log_path.unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for h in _PROCESSES:
            # running now, or stopped/crashed during this phase of the test
            if h.alive or (h.proc is None and h.stopped_at >= call.start):
                text = h.log_text(3000)
                if text:
                    rep.sections.append((f"log of {h.name} ({h.log_path})", text))


# ============================================================================ Label Studio
#
# A real Label Studio server (see ../shared/LABEL_STUDIO.md).  The first start on a fresh data
# dir runs the migrations (~30-70 s); that happens once, into a template data dir which is
# cached in <repo>/.cache (NERQ_LS_TEMPLATE_CACHE=0: no cache).  Each server starts from a
# copy of the template (~5-10 s).  The executable is $NERQ_LS_BIN, default
# <repo>/.venv-ls/bin/label-studio; without it the tests that need it skip.

LS_BIN = Path(os.environ.get("NERQ_LS_BIN", str(REPO / ".venv-ls" / "bin" / "label-studio")))
LS_USER = "admin@example.com"
LS_PASSWORD = "nerq-test-password-123"
LS_TOKEN = "nerq0test0token0abcdef0123456789"  # <= 40 characters (legacy token)
LS_START_TIMEOUT = float(os.environ.get("NERQ_LS_START_TIMEOUT", "300"))
LS_FIXTURES = frozenset(
    {"label_studio", "ls_server", "ls_api", "ls_project", "label_studio_factory"}
)

MINIMAL_NER_CONFIG = """<View>
  <Labels name="label" toName="text">
    <Label value="PER"/><Label value="ORG"/><Label value="LOC"/><Label value="MISC"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""


def ner_label_config() -> str:
    """``label_config/conll2003.xml`` when present, else an equivalent inline config."""
    path = REPO / "label_config" / "conll2003.xml"
    return path.read_text() if path.is_file() else MINIMAL_NER_CONFIG


def _ls_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("LABEL_STUDIO_") or k.startswith("DJANGO_"))}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_USERNAME": LS_USER,
        "LABEL_STUDIO_PASSWORD": LS_PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": LS_TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _ls_ready(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    try:
        return json.loads(body).get("status") == "UP"
    except (ValueError, AttributeError):
        return False


class LabelStudioServer(ProcessHandle):
    """A real Label Studio on ``127.0.0.1:<port>`` with data dir ``data_dir``.

    ``url``, ``token`` (legacy API token of ``admin@example.com``), ``data_dir``, ``port``;
    ``stop()`` and ``start()`` keep the port and the data dir (for interrupted-sync tests).
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = LS_TOKEN
        super().__init__(
            [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1",
             "--port", str(self.port)],
            _ls_env(self.data_dir), f"{self.url}/health", name="label-studio",
            cwd=self.data_dir, ready=_ls_ready,
        )

    def start(self, timeout: float = LS_START_TIMEOUT) -> LabelStudioServer:
        if self.alive:
            return self
        # a busy port makes Label Studio silently move to port+1: wait for ours to be free
        deadline = time.monotonic() + 30
        while port_in_use(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} for Label Studio is still in use")
            time.sleep(0.2)
        super().start(timeout)
        status, body = http_get(f"{self.url}/api/projects/?page_size=1",
                                headers={"Authorization": f"Token {self.token}"})
        if status != 200:
            self.stop()
            raise RuntimeError(
                f"Label Studio at {self.url} rejected the test token (HTTP {status}: "
                f"{body[:200]!r}); was the data dir made with another token?\n{self.log_text()}"
            )
        return self

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def _ls_template(tmp_root: Path) -> Path:
    """A migrated Label Studio data dir with the test user, made once (and cached)."""
    if not LS_BIN.is_file():
        pytest.skip(
            f"Label Studio executable {LS_BIN} not found (set NERQ_LS_BIN, or run .ci/run, "
            "which installs it into .venv-ls)"
        )
    st = LS_BIN.stat()
    key = hashlib.sha1(
        f"{LS_BIN.resolve()}|{st.st_size}|{int(st.st_mtime)}|{LS_TOKEN}|{LS_PASSWORD}".encode()
    ).hexdigest()[:12]
    use_cache = os.environ.get("NERQ_LS_TEMPLATE_CACHE", "1") != "0"
    cached = REPO / ".cache" / f"ls-template-{key}"
    if use_cache and (cached / ".nerq-complete").is_file():
        return cached
    work = tmp_root / "ls-template"
    work.mkdir(parents=True, exist_ok=True)
    server = LabelStudioServer(work)
    t0 = time.monotonic()
    try:
        server.start()
    finally:
        server.stop()
    logging_line = f"Label Studio template migrated in {time.monotonic() - t0:.1f} s"
    print(logging_line)
    (work / ".nerq-complete").write_text(logging_line + "\n")
    if not use_cache:
        return work
    tmp_cached = cached.with_name(cached.name + f".tmp{os.getpid()}")
    try:
        shutil.copytree(work, tmp_cached)
        os.replace(tmp_cached, cached)
    except OSError:  # another session cached it first (or no space): use our own copy
        shutil.rmtree(tmp_cached, ignore_errors=True)
        return work
    return cached


def _copy_template(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns(".nerq-complete"))
    return dest


@pytest.fixture(scope="session")
def _ls_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ls_template(tmp_path_factory.mktemp("ls"))


@pytest.fixture(scope="session")
def label_studio_factory(
    _ls_template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], LabelStudioServer]]:
    """Start extra Label Studio servers, each on its own copy of the template data dir."""
    servers: list[LabelStudioServer] = []

    def make() -> LabelStudioServer:
        data = _copy_template(_ls_template_dir, tmp_path_factory.mktemp("lsdata") / "data")
        server = LabelStudioServer(data)
        servers.append(server)
        return server.start()

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def ls_server(label_studio_factory: Callable[[], LabelStudioServer]) -> LabelStudioServer:
    """The session's shared Label Studio server (started once)."""
    return label_studio_factory()


@pytest.fixture
def label_studio(ls_server: LabelStudioServer) -> LabelStudioServer:
    """The shared Label Studio server, (re)started if an earlier test stopped it.

    ``.url``, ``.token``, ``.data_dir``, ``.port``, ``.stop()``, ``.start()``.
    """
    return ls_server.start()


@pytest.fixture
def ls_api(label_studio: LabelStudioServer) -> Any:
    """An :class:`analysis.labelstudio.LabelStudioAPI` for the shared server."""
    from analysis.labelstudio import LabelStudioAPI

    return LabelStudioAPI(label_studio.url, label_studio.token)


@pytest.fixture
def ls_project(label_studio: LabelStudioServer) -> Iterator[Callable[..., int]]:
    """Factory: ``ls_project(label_config=None, *, title=None, tasks=None) -> project id``.

    A fresh project on the shared server (default config: CoNLL-2003 PER/ORG/LOC/MISC), with
    ``tasks`` (a list of data dicts or full tasks) imported.  Deleted after the test.
    """
    from analysis.labelstudio import LabelStudioAPI

    api = LabelStudioAPI(label_studio.url, label_studio.token)
    made: list[int] = []

    def make(
        label_config: str | None = None,
        *,
        title: str | None = None,
        tasks: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        pid = api.create_project(title or f"nerq test {len(made) + 1}",
                                 label_config or ner_label_config())
        made.append(pid)
        if tasks:
            api.import_tasks(pid, list(tasks))
        return pid

    yield make
    if label_studio.alive:
        for pid in made:
            try:
                api.delete_project(pid)
            except Exception:  # noqa: BLE001 - cleanup only
                pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use a Label Studio fixture are integration tests."""
    for item in items:
        if LS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


#: annotated sentences shared by the backend tests: (text, [(surface, label), ...])
BACKEND_SENTS = [
    ("Obama visited Paris on Monday .", [("Obama", "PER"), ("Paris", "LOC")]),
    ("Merkel met Macron in Berlin .", [("Merkel", "PER"), ("Macron", "PER"), ("Berlin", "LOC")]),
    ("Google opened an office in London .", [("Google", "ORG"), ("London", "LOC")]),
    ("The United Nations met in Geneva .", [("United Nations", "ORG"), ("Geneva", "LOC")]),
    ("Microsoft hired John Smith .", [("Microsoft", "ORG"), ("John Smith", "PER")]),
    ("Germans love the Bundesliga .", [("Germans", "MISC"), ("Bundesliga", "MISC")]),
    ("Apple sued Samsung in California .", [("Apple", "ORG"), ("Samsung", "ORG"),
                                            ("California", "LOC")]),
    ("Putin flew to Moscow .", [("Putin", "PER"), ("Moscow", "LOC")]),
]
