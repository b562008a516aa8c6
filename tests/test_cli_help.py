"""``ner-quality --help`` reads as plain text, bad flags are the sub-command's error, and
docker-compose.yml / docker-compose.gpu.yml agree with the README's configuration table."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

from ls_backend.cli import COMMANDS, main

REST_MARKUP = ("``", ":mod:`", ":func:`", ":class:`", ":meth:`", ":data:`", ":attr:`")


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [None, *COMMANDS], ids=["top-level", *COMMANDS])
def test_help_has_no_rest_markup(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    out = help_text(["--help"] if command is None else [command, "--help"], capsys)
    assert out.startswith(f"usage: ner-quality{'' if command is None else ' ' + command}")
    found = [m for m in REST_MARKUP if m in out]
    assert not found, f"{command or 'ner-quality'} --help still shows reST markup {found}"
    assert not re.search(r":[a-z]+:`", out), "a reST role is left in --help"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["analyze", "--bogus"], "error:"),  # the required input group is missing too
        (["analyze", "--data", "x.conll", "--bogus"], "error: unrecognized arguments: --bogus"),
        (["serve", "--bogus", "1"], "error: unrecognized arguments: --bogus 1"),
        (["report", "--data", "x.conll", "--log-level", "DEBUG"],
         "error: unrecognized arguments: --log-level DEBUG"),
    ],
    ids=["analyze-bogus", "analyze-data-bogus", "serve-no-required-args", "global-option-after"],
)
def test_unknown_flag_is_the_sub_commands_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: ner-quality {argv[0]} "), err
    assert f"ner-quality {argv[0]}: {message}" in err, err


def test_unknown_flag_subprocess() -> None:
    """The same through the real entry point: exit 2 and the analyze usage first."""
    proc = subprocess.run(
        [sys.executable, "-m", "ls_backend.cli", "analyze", "--bogus"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: ner-quality analyze"), proc.stderr


# --- docker compose ---------------------------------------------------------------------------

CPU_FILE = REPO / "docker-compose.yml"
GPU_FILE = REPO / "docker-compose.gpu.yml"


def load_service(path: Path, name: str = "ner-quality") -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    service: dict[str, Any] = doc["services"][name]
    return service


def env_names(service: dict[str, Any]) -> set[str]:
    """Variable names of a service's ``environment`` (mapping or ``NAME=value`` list form)."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return set(env)
    return {item.split("=", 1)[0] for item in env}


def readme_config_names() -> set[str]:
    """Names in the README table "### Configuration (environment variables)".

    A row may name several variables (``| `BASIC_AUTH_USER` / `BASIC_AUTH_PASS` | ...``).
    """
    text = (REPO / "README.md").read_text(encoding="utf-8")
    heading = "### Configuration (environment variables)"
    assert heading in text
    section = text.split(heading, 1)[1]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell))
    return names


def test_cpu_compose_has_no_gpu_reservation() -> None:
    service = load_service(CPU_FILE)
    assert "deploy" not in service
    assert "cu" not in service["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1]


def test_gpu_override_reserves_an_nvidia_gpu_and_builds_cuda_torch() -> None:
    service = load_service(GPU_FILE)
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               for d in devices), devices
    index = service["build"]["args"]["TORCH_INDEX_URL"]
    gpu_index = re.search(r"https://download\.pytorch\.org/whl/cu\d+", index)
    assert gpu_index, index
    # the Dockerfile's GPU example names the same index
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert f"TORCH_INDEX_URL={gpu_index.group(0)} " in dockerfile


def test_compose_environment_equals_readme_table() -> None:
    compose = env_names(load_service(CPU_FILE))
    readme = readme_config_names()
    assert compose - readme == set(), "set in docker-compose.yml, missing in the README table"
    assert readme - compose == set(), "in the README table, missing in docker-compose.yml"
    assert env_names(load_service(GPU_FILE)) <= readme


def _docker_compose() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           timeout=60, check=False)
    return docker if probe.returncode == 0 else None


@pytest.mark.parametrize("files", [[CPU_FILE], [CPU_FILE, GPU_FILE]], ids=["cpu", "cpu+gpu"])
def test_docker_compose_config(files: list[Path]) -> None:
    docker = _docker_compose()
    if docker is None:
        pytest.skip("docker with the compose v2 plugin is not installed")
    args = [a for f in files for a in ("-f", str(f))]
    proc = subprocess.run([docker, "compose", *args, "config", "-q"], capture_output=True,
                          text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
