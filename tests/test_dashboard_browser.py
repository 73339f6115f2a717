"""The dashboard in a real browser: headless chromium loads it from a running
daemon, clicks the performance test's button, waits for the verdict, and
takes a screenshot that must show something."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from .chromium import chromium
from .daemons import DaemonFactory

pytestmark = pytest.mark.slow

JSON_HEADERS = {"Content-Type": "application/json"}
# The page's background (--bg in dashboard.html).
BACKGROUND = (15, 23, 42)


def test_the_button_runs_the_performance_test_and_the_page_shows_it(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    served = daemon()
    for n in range(20):
        body = json.dumps({"symbol": f"WEB-{n % 4}", "price": 100 + n}).encode()
        assert served.request("POST", "/v1/prices", body, JSON_HEADERS).status == 200
    # tests/system-deps.sh installs chromium: one that is missing or cannot
    # start fails the test (BrowserUnavailable says why), never skips it.
    with chromium(tmp_path / "profile") as browser:
        browser.call("Page.enable")
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Page.navigate", url=f"http://{served.host}:{served.port}/dashboard")
        # Polled and drawn: the tier from /health, the engine's figures from its metrics.
        tier = browser.wait_for(
            "document.readyState === 'complete' && document.getElementById('tier').textContent"
            " !== '…' && document.getElementById('tier').textContent",
            timeout=20,
        )
        assert tier == served.health()["tier"]
        browser.wait_for(
            "document.getElementById('engine').textContent.includes('processed 20')", 20
        )
        # The engine's history has a point a second: the chart draws it.
        browser.wait_for("Number(document.getElementById('chart').dataset.points) > 0", 20)

        assert browser.evaluate("document.getElementById('run-test').click(), true")
        state = browser.wait_for(
            "['pass', 'fail'].includes(document.getElementById('perf-result').dataset.state)"
            " && document.getElementById('perf-result').dataset.state",
            timeout=60,
        )
        text = browser.evaluate("document.getElementById('perf-result').textContent")
        assert text.startswith("PASS" if state == "pass" else "FAIL"), text
        assert "p95" in text and "10,000 updates" in text
        # The click reached the daemon, once.
        routes = served.get("/v1/stats").json()["routes"]
        assert routes["/v1/price-engine/performance-test"]["count"] == 1

        png = browser.screenshot()
    (tmp_path / "dashboard.png").write_bytes(png)

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    assert (width, height) == (1400, 1000)
    # (count, colour) for every colour in the picture.
    colours = dict((colour, count) for count, colour in image.getcolors(width * height))
    drawn = width * height - colours.get(BACKGROUND, 0)
    # Text, panels, chart axes and lines: many colours, and much not background.
    assert len(colours) > 100, len(colours)
    assert drawn > 0.2 * width * height, drawn / (width * height)


def test_the_market_section_shows_a_new_order_and_trade_without_a_reload(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    served = daemon()
    with chromium(tmp_path / "profile") as browser:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"http://{served.host}:{served.port}/dashboard")
        browser.wait_for(
            "document.readyState === 'complete'"
            " && document.getElementById('market-state').textContent === 'live'"
            " && document.getElementById('book').dataset.sequence !== undefined",
            timeout=20,
        )
        # Gone if the page reloads: what follows must come over the WebSocket.
        browser.evaluate("window.loadedOnce = 'yes'")
        order = {"symbol": "BTC-USD", "side": "sell", "price": "12345.67", "qty": "2"}
        result = served.request("POST", "/v1/orders", json.dumps(order).encode(), JSON_HEADERS)
        assert result.status == 201, result.body
        browser.wait_for("document.getElementById('book').textContent.includes('12345.67')", 20)
        crossing = {"symbol": "BTC-USD", "side": "buy", "price": "12345.67", "qty": "0.5"}
        result = served.request("POST", "/v1/orders", json.dumps(crossing).encode(), JSON_HEADERS)
        assert result.status == 201, result.body
        trades = browser.wait_for(
            "document.getElementById('trades').dataset.count === '1'"
            " && document.getElementById('trades').textContent",
            20,
        )
        assert "12345.67" in trades and "0.5000" in trades
        # The book shows what is left of the sell.
        browser.wait_for("document.getElementById('book').textContent.includes('1.5000')", 20)
        assert browser.evaluate("window.loadedOnce") == "yes"
