"""The radiologist's page in a real browser: Debian's headless Chromium driven by Playwright.

The radiologist signs in with a client certificate from the hospital's own CA (a browser
without one gets a readable refusal). Upload a synthetic study, read the class, probability
and threshold from the page (the same answer as the gRPC Diagnose), scroll the slice viewer,
see the Grad-CAM overlay drawn, change the window, download the montage and the JSON; upload
a damaged study and read the error.
`UCADI_WEB_SCREENSHOT=docs/images/web-page.png` also saves the README's screenshot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from web_page_fixtures import serve_page, site_certificate, synthetic_study, truncated_copy

from services.inference.client import diagnose
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.tls import secure_channel

CHROMIUM = Path("/usr/bin/chromium")
# The closed network: no background requests, no component updates, no QUIC probes.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
RESULT_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it: "
                                  "apt-get install chromium)")
pytest.importorskip("playwright", reason="pip install -e '.[dev]' (playwright)")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def page_site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("web-browser")
    create_ca(root / "ca", "test-federation-ca")
    create_ca(root / "site-ca", "hospital-ca")
    server_tls = issue_certificate(root / "ca", root / "server", "inference", "service")
    client_tls = issue_certificate(root / "ca", root / "client", "radiology", "operator")
    doctor = site_certificate(root / "site-ca", root / "doctor", "dr-chen", "radiologist",
                              root / "ca" / "ca.crt")
    served = serve_page(root, server_tls, auth="certificate",
                        client_ca_file=root / "site-ca" / "ca.crt",
                        card_metrics={"threshold": 0.5, "auc": 0.91, "sensitivity": 0.87,
                                      "specificity": 0.9})
    study = synthetic_study(root / "synth")
    yield served, client_tls, doctor, study, truncated_copy(study, root / "damaged" / "series")
    served.stop()


def overlay_pixels(page) -> int:
    """Pixels of the overlay canvas that the heatmap coloured (alpha > 0)."""
    return page.evaluate("""() => {
        const canvas = document.getElementById('overlay-canvas');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let coloured = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) coloured++;
        return coloured;
    }""")


def test_page_diagnoses_a_study_shows_the_overlay_and_explains_a_damaged_one(
        page_site, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    served, client_tls, doctor, study, damaged = page_site
    origin = f"https://127.0.0.1:{served.port}"
    with secure_channel(served.service.running.target, client_tls) as channel:
        expected = diagnose(channel, study, samples=5, seed=0)
    with sync_playwright() as playwright:
        # launch() gives Chromium a new empty --user-data-dir of its own.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            stranger = browser.new_context(ignore_https_errors=True).new_page()
            refused = stranger.goto(f"{origin}/")
            assert refused.status == 401
            assert "needs a client certificate" in stranger.text_content("body")
            # The radiologist's browser holds a certificate from the hospital's own CA.
            context = browser.new_context(
                ignore_https_errors=True, viewport={"width": 1280, "height": 900},
                client_certificates=[{"origin": origin, "certPath": str(doctor / "tls.crt"),
                                      "keyPath": str(doctor / "tls.key")}])
            page = context.new_page()
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith(f"{origin}/") else None)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # The damaged study's refusal (400) is the one failed load the page should see.
            page.on("console", lambda m: errors.append(m.text)
                    if m.type == "error" and "status of 400" not in m.text else None)
            page.goto(f"{origin}/")
            expect(page.locator("#session")).to_contain_text("version 7")
            assert page.text_content("#session").startswith("dr-chen (radiologist)")

            page.set_input_files("#folder-input", str(study))
            page.wait_for_selector("#viewer-panel:not([hidden])", timeout=RESULT_TIMEOUT_MS)
            assert page.text_content("#predicted-class") == expected.predicted_class
            shown = float(page.get_attribute("#covid-probability", "data-value"))
            assert shown == pytest.approx(expected.covid_probability, abs=1e-5)
            above = "above" if expected.covid_probability >= 0.5 else "below"
            assert page.text_content("#threshold") == (
                f"0.5000 (chosen on validation data): this study is {above} it")
            assert "validation: auc 0.9100" in page.text_content("#model")
            assert "over 5 samplings" in page.text_content("#spread")
            assert "densenet3d/cpu-small, version 7" in page.text_content("#model")

            assert overlay_pixels(page) > 0
            assert page.get_attribute("#viewer", "data-slice") == "0"
            page.hover("#viewer")
            for expected_slice in ("1", "2", "3"):
                page.mouse.wheel(0, 120)
                expect(page.locator("#viewer")).to_have_attribute("data-slice", expected_slice)
            assert overlay_pixels(page) > 0
            expect(page.locator("#history-table tbody tr")).to_have_count(1)
            assert expected.study.series_uid not in ("", None)
            screenshot = os.environ.get("UCADI_WEB_SCREENSHOT")
            if screenshot:
                page.screenshot(path=screenshot, full_page=True)
            page.click("#window-mediastinum")
            assert page.get_attribute("#viewer", "data-window") == "mediastinum"
            page.fill("#opacity", "80")
            page.dispatch_event("#opacity", "input")
            assert page.eval_on_selector("#overlay-canvas", "c => c.style.opacity") == "0.8"

            montage = context.request.get(page.eval_on_selector("#download-png", "a => a.href"))
            assert montage.ok and montage.body().startswith(b"\x89PNG\r\n\x1a\n")
            summary = json.loads(context.request.get(
                page.eval_on_selector("#download-json", "a => a.href")).body())
            assert summary["predicted_class"] == expected.predicted_class
            assert summary["study"]["study_uid"] in page.text_content("#history-table")
            assert summary["model"]["version"] == "7"

            page.set_input_files("#folder-input", str(damaged))
            page.wait_for_selector("#error:not([hidden])", timeout=RESULT_TIMEOUT_MS)
            message = page.text_content("#error")
            assert "cannot be decoded" in message and "export the series again" in message
            assert "Traceback" not in message and "ucadi-web-study" not in message
        finally:
            browser.close()
    assert not outside, outside
    assert not errors, errors
