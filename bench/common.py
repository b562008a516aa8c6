"""What several benches share: finding Label Studio, printing and saving the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def label_studio_or_say() -> str | None:
    """The ``label-studio`` executable, or None after saying on stderr how to get one."""
    from ls_backend.local_servers import find_label_studio

    exe = find_label_studio()
    if not exe:
        print("no label-studio executable (install it into .venv-ls or set NERQ_LS_BIN)",
              file=sys.stderr)
    return exe


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """Terminate a server a bench started; kill it when it does not exit within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print the result as indented JSON, and write it to ``out`` too when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
