"""The driver-side writer of the Ray bulk prediction, against a real Label Studio: bounded,
rate-limited, retried through an outage, each task once, rejected writes named."""

from __future__ import annotations

import threading
import time
from typing import Any

from ls_backend.engine.writer import PredictionWriter


def _region(text: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": 0, "end": len(text.split()[0]), "text": text.split()[0],
                       "labels": ["PER"]}}]


def _counts(api: Any, pid: int, version: str) -> dict[int, int]:
    return {int(t["id"]): sum(p.get("model_version") == version for p in t.get("predictions") or [])
            for page in api.iter_tasks(pid) for t in page}


def test_writer_once_per_task_rate_limited_and_rejects_named(ls_project: Any,
                                                             ls_api: Any) -> None:
    texts = [f"Obama spoke {i} ." for i in range(8)]
    pid = ls_project(tasks=[{"text": t} for t in texts])
    ids = sorted(_counts(ls_api, pid, "v").keys())
    w = PredictionWriter(ls_api, "nerq-writer-test", max_pending=2, rate=8.0)
    t0 = time.monotonic()
    for tid, text in zip(ids, texts):
        w.put(tid, _region(text), 0.5)
    w.put(ids[0], _region(texts[0]), 0.5)  # the same task again (a retried batch)
    w.put(999_999, _region("Nobody ."), 0.5)  # no such task: Label Studio answers 404
    report = w.close()
    elapsed = time.monotonic() - t0
    assert report.written == len(ids) and report.duplicates_skipped == 1
    assert report.failed == 1 and "task 999999" in report.errors[0]
    assert elapsed >= (len(ids) - 1) / 8.0  # 8 writes/s at most
    assert set(_counts(ls_api, pid, "nerq-writer-test").values()) == {1}


def test_writer_retries_through_a_label_studio_outage(label_studio: Any, ls_project: Any,
                                                      ls_api: Any) -> None:
    texts = [f"Merkel left {i} ." for i in range(6)]
    pid = ls_project(tasks=[{"text": t} for t in texts])
    ids = sorted(_counts(ls_api, pid, "v").keys())
    label_studio.stop()
    restarted = threading.Event()

    def restart() -> None:
        time.sleep(3)
        label_studio.start()
        restarted.set()

    th = threading.Thread(target=restart)
    th.start()
    try:
        w = PredictionWriter(ls_api, "nerq-outage", retries=9, backoff=1.0)
        for tid, text in zip(ids, texts):
            w.put(tid, _region(text), 0.9)
        report = w.close()
    finally:
        th.join()
    assert restarted.is_set()
    assert report.retries >= 1, "the first write should have met the outage"
    assert report.written + report.already_there == len(ids) and report.failed == 0
    assert set(_counts(ls_api, pid, "nerq-outage").values()) == {1}


def test_writer_gives_up_visibly_when_label_studio_stays_down(label_studio: Any,
                                                             ls_project: Any,
                                                             ls_api: Any) -> None:
    pid = ls_project(tasks=[{"text": "Biden came ."}, {"text": "Rome is far ."}])
    ids = sorted(_counts(ls_api, pid, "v").keys())
    label_studio.stop()
    try:
        w = PredictionWriter(ls_api, "nerq-down", retries=1, backoff=0.2)
        raised = None
        try:
            for tid in ids:
                w.put(tid, _region("Biden came ."), 0.9)
            time.sleep(1.0)
            w.close()
        except ConnectionError as exc:
            raised = str(exc)
        assert raised is not None and "unreachable after 2 attempts" in raised
        assert "run the same command again to resume" in raised
        assert w.report.written == 0
    finally:
        label_studio.start()
