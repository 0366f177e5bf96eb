"""`custintel demo` end to end: a real server and worker, data through HTTP, models trained,
the riskiest accounts printed with reasons, and curl commands that work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.platform.settings import Settings
from tests.fixtures.live import free_port

pytestmark = pytest.mark.slow  # starts a server, a subprocess or a browser


def test_demo_loads_trains_explains_and_keeps_serving(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CUSTINTEL_DATABASE_URL": str(settings.database_url),
        "CUSTINTEL_MODELS_DIR": str(tmp_path / "models"),
    }
    command = [sys.executable, "-m", "app.cli", "demo", "--accounts", "300", "--port", str(port)]
    errors = (tmp_path / "stderr").open("w")
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
    ) as demo:
        try:
            lines = []
            deadline = time.monotonic() + 600
            assert demo.stdout is not None
            while time.monotonic() < deadline:
                line = demo.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if "Ctrl-C stops the service" in line:
                    break
            out = "".join(lines)
            # Not a terminal: whole lines, the training's stages and the time left among them.
            assert "\r" not in out
            assert re.search(r"\nSent events through the API: [\d,]+\n", out), out[:3000]
            assert re.search(r"\nchurn +\d+%  search \d+ of \d+", out), out[-3000:]
            assert re.search(r"left\n", out), out[-3000:]
            assert "Ctrl-C stops the service" in out, (
                out[-3000:],
                (tmp_path / "stderr").read_text(),
            )

            for segment in ("enterprise", "mid-market", "smb"):
                assert f"Riskiest {segment} accounts" in out
            assert re.search(
                r"\n      .+: .+ \(typical for \w.*\); (raises|lowers) churn risk", out
            )
            assert "held-out AUC" in out and "Scored " in out
            # The likeliest advocates, each with its reasons in words.
            assert re.search(
                r"Likeliest advocates[^\n]*\n  acct-\d+ .+\n      .+; (raises|lowers) the chance "
                r"of advocacy",
                out,
            ), out[-3000:]
            assert re.search(
                r"NPS enterprise: [+-]\d+ \(95% [+-]\d+ to [+-]\d+; [\d,]+ answers", out
            )
            assert re.search(r"What customers wrote: [\d,]+ texts, [\d,]+ negative", out)
            assert re.search(r"\n    [^\n]+: [\d,]+ texts\n", out), out[-3000:]

            # The printed commands work against the service that is still running.
            key = re.search(r"export KEY=(\S+)", out)
            url = re.search(r"curl -s '(http://[^']+/v1/accounts/[^']+/scores\?[^']+)'", out)
            assert key and url, out[-2000:]
            response = httpx.get(url.group(1), headers={"Authorization": f"Bearer {key.group(1)}"})
            assert response.status_code == 200, response.text
            targets = {s["target"] for s in response.json()["scores"]}
            assert targets == {"churn", "expansion"}

            # The printed console user signs in and sees the book.
            console = re.search(r"The console for the people who act: (http://\S+/app/)", out)
            lead = re.search(r"\n  (lead@\S+)  password (\S+)  \(lead", out)
            assert console and lead, out[-2000:]
            with httpx.Client(base_url=console.group(1)) as browser:
                signed = browser.post(
                    "login", data={"email": lead.group(1), "password": lead.group(2)}
                )
                assert signed.status_code == 303, signed.text[:500]
                book = browser.get("")
                assert book.status_code == 200 and 'table class="book"' in book.text
                assert book.text.count('href="/app/accounts/') >= 10
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(30)
            except subprocess.TimeoutExpired:
                demo.kill()
                pytest.fail("the demo did not stop on Ctrl-C")
            errors.close()
    # Ctrl-C is a way to stop it, not an error: a line, no traceback.
    said = (tmp_path / "stderr").read_text()
    assert "Traceback" not in said and "Exception ignored" not in said, said[-3000:]
    assert "custintel demo: stopped" in said, said[-3000:]
