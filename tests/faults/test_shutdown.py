"""SIGTERM (what Kubernetes, systemd and `kill` send) stops `adaclip serve` cleanly: exit status 0
and no process left behind, whether it arrives while the app is still starting (Ray's crash handler
used to turn that into SIGABRT 3 s later, leaving Ray's agents running) or while it serves. Serving,
it drains: new requests are refused, an upload in flight is answered, one that outlasts `--grace-s`
is cut at that bound.

Two uploads are started and their bodies held back halfway (their generators wait for the test), so
both are provably in flight when the signal is sent; one is then let finish, the other never is.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from faultkit import ServeApp, open_served_index, wait_until

from serve.upload import STAGED_PREFIX, STAGED_SUFFIX

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

GRACE_S = 12.0  # --grace-s: the released upload finishes well inside it, the held one never does
EXIT_S = GRACE_S + 60.0  # signal -> exit: the drain, then stopping Serve and Ray
LEFTOVER_S = 20.0  # exit -> no process of its session left


def multipart(path: Path) -> tuple[bytes, str]:
    """A multipart/form-data body with the video as the `file` part, and its content type."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + path.read_bytes() + tail, f"multipart/form-data; boundary={boundary}"


class HeldUpload:
    """POST /videos in a thread, sending the first half of the body at once and the rest only
    after `release()`."""

    def __init__(self, url: str, path: Path):
        self.body, self.content_type = multipart(path)
        self.released = threading.Event()
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._post, args=(url,), daemon=True)
        self.thread.start()

    def _parts(self):
        half = len(self.body) // 2
        yield self.body[:half]
        self.released.wait(EXIT_S + 60)  # bounded: the test releases every upload before it ends
        yield self.body[half:]

    def _post(self, url: str) -> None:
        headers = {"content-type": self.content_type, "content-length": str(len(self.body))}
        try:
            self.response = httpx.post(
                f"{url}/videos", content=self._parts(), headers=headers, timeout=EXIT_S
            )
        except httpx.HTTPError as e:
            self.error = e

    def release(self) -> None:
        self.released.set()

    def result(self, deadline_s: float) -> httpx.Response | Exception:
        self.thread.join(deadline_s)
        assert not self.thread.is_alive(), "the upload got no answer"
        return self.response if self.response is not None else self.error

    @property
    def ended(self) -> bool:
        return self.response is not None or self.error is not None


def refused(url: str) -> int | None:
    """The status of a new request once the server no longer takes it (404: its route is
    withdrawn; 503: draining), else None."""
    try:
        status = httpx.get(f"{url}/healthz", timeout=5).status_code
    except httpx.HTTPError:
        return None  # the listener must stay up while uploads drain: not a refusal
    return status if status in (404, 503) else None


def test_sigterm_drains_inflight_uploads_then_exits_0_leaving_nothing(launcher, fault_corpus, tmp_path):
    app = ServeApp(launcher, tmp_path, grace_s=GRACE_S)
    app.start()
    app.wait_ready()
    first, second = sorted(fault_corpus.glob("*.mp4"))[:2]

    finishing, outlasting = HeldUpload(app.url, first), HeldUpload(app.url, second)
    try:
        # both in flight: the ingress is writing their first halves to staging files
        wait_until(
            lambda: len(list(app.staging_dir.glob(f"{STAGED_PREFIX}*{STAGED_SUFFIX}"))) == 2,
            60,
            "both uploads reach the ingress (two staging files)",
        )
        app.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert wait_until(lambda: refused(app.url), 15, "new requests refused after SIGTERM")
        assert not finishing.ended and not outlasting.ended, "an upload ended before its body did"

        finishing.release()  # the rest of its body: it completes during the drain
        answer = finishing.result(GRACE_S)
        assert isinstance(answer, httpx.Response), f"the in-flight upload was cut: {answer!r}\n{app.output()}"
        assert answer.status_code == 201, answer.text
        vid = answer.json()["id"]

        rc = app.wait_exit(EXIT_S - (time.monotonic() - signalled))
        took = time.monotonic() - signalled
    finally:
        finishing.release()
        outlasting.release()
    print(f"exit {rc} {took:.1f} s after SIGTERM (grace {GRACE_S:g} s)")
    assert rc == 0, f"exit status {rc} after SIGTERM\n{app.output()}"
    assert took >= GRACE_S, "it stopped before the grace period with an upload still in flight"
    app.assert_gone(LEFTOVER_S, "after adaclip serve exited")
    err = Path(f"{app.log}.err").read_text(errors="replace")
    assert "SIGTERM received" not in err, "Ray's crash handler saw the SIGTERM (its 3 s abort path)"
    assert "still in flight after" in err, err[-2000:]
    assert not isinstance(outlasting.result(30), httpx.Response), "the held upload was answered"

    # what was acknowledged during the drain is durable: indexed, its file stored; nothing else
    with open_served_index(app.index_path) as index:
        assert index.get(vid) is not None and index.count() == 1
    assert len(list(app.media_dir.glob(f"{vid}.*"))) == 1, "the stored file of the upload"


def test_sigterm_during_startup_exits_0_leaving_nothing(launcher, tmp_path):
    app = ServeApp(launcher, tmp_path, grace_s=GRACE_S)
    app.start()
    # mid-deploy: the replicas' processes exist, the app is not serving yet
    wait_until(
        lambda: app.proc.poll() is not None or any("ServeReplica" in cmd for cmd in app.processes().values()),
        180,
        "Serve starts the app's replicas",
    )
    app.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    rc = app.wait_exit(EXIT_S)
    print(f"exit {rc} {time.monotonic() - signalled:.1f} s after SIGTERM")
    assert rc == 0, f"exit status {rc} after SIGTERM during start-up\n{app.output()}"
    app.assert_gone(LEFTOVER_S, "after adaclip serve exited")
    err = Path(f"{app.log}.err").read_text(errors="replace")
    assert "SIGTERM received" not in err, "Ray's crash handler saw the SIGTERM (its 3 s abort path)"
    assert "SIGTERM during start-up" in err, err[-2000:]
