"""The witnesses' HTTP interface as a client sees it (c2sp.org/tlog-witness add-checkpoint).

The standard library's HTTP client is enough: one short request per witness per
publication interval, from one thread.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from dataclasses import dataclass

MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = "auditlog-publisher"


@dataclass(frozen=True)
class WitnessAnswer:
    """What a witness answered: its HTTP status (0: no answer at all) and body."""

    status: int
    body: str
    content_type: str = ""


def add_checkpoint_body(old_size: int, proof: list[bytes], checkpoint: str) -> bytes:
    """`old <size>`, one base64 proof hash a line, a blank line, the signed checkpoint."""
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + checkpoint).encode()


class WitnessClient:
    def __init__(self, timeout_s: float):
        self._timeout_s = timeout_s

    def add_checkpoint(
        self, url: str, old_size: int, proof: list[bytes], checkpoint: str
    ) -> WitnessAnswer:
        """POST <url>/add-checkpoint; a network failure is status 0 with the reason."""
        request = urllib.request.Request(  # noqa: S310 - the operator configures http(s) URLs
            url.rstrip("/") + "/add-checkpoint",
            data=add_checkpoint_body(old_size, proof, checkpoint),
            method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8", "User-Agent": USER_AGENT},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                return WitnessAnswer(
                    response.status,
                    response.read(MAX_ANSWER_BYTES).decode(errors="replace"),
                    response.headers.get("Content-Type", ""),
                )
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read(MAX_ANSWER_BYTES).decode(errors="replace")
            return WitnessAnswer(exc.code, body, exc.headers.get("Content-Type", ""))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return WitnessAnswer(0, f"no answer: {reason}")
