"""The HTTP server: every endpoint and error path in process, micro-batching, a bounded load
test on loopback, and a real browser (Debian's chromium driven by Playwright) on the page."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="heedful[serve] is not installed")
import httpx
from fastapi.testclient import TestClient

from heedful.cli import main
from heedful.decoding.translator import Translator
from heedful.serving.server import ServeSettings, create_app

SENTENCE = "Y dijo Dios: Sea la luz: y fué la luz."


@pytest.fixture(scope="module")
def translator() -> Translator:
    return Translator.from_checkpoint("bible-es-en")


@pytest.fixture(scope="module")
def client(translator: Translator) -> Iterator[TestClient]:
    app = create_app({"bible-es-en": translator}, ServeSettings(max_texts=4, max_chars=200))
    with TestClient(app) as c:
        yield c


# ----------------------------------------------------------------------------- endpoints


def test_health_and_models(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["bible-es-en"]
    models = client.get("/models").json()
    assert models[0]["arch"] == "rnn" and models[0]["attention"] == "scaled_dot"


def test_translate_matches_the_python_api(client: TestClient, translator: Translator) -> None:
    texts = [SENTENCE, "Jesús lloró.", ""]
    res = client.post("/translate", json={"texts": texts, "beam_size": 3, "n_best": 2})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == "bible-es-en"
    direct = translator.translate(texts, beam_size=3, n_best=2)
    for out, ref in zip(body["translations"], direct, strict=True):
        assert out["translation"] == ref.text
        assert len(out["n_best"]) == (2 if ref.text else 0) or not ref.text
        assert out["attention"] is None
    assert body["translations"][2]["translation"] == ""


def test_translate_by_sampling_is_seeded(client: TestClient) -> None:
    body = {"texts": [SENTENCE] * 3, "sample": True, "temperature": 1.3, "top_p": 0.9,
            "seed": 5}
    first = client.post("/translate", json=body).json()["translations"]
    again = client.post("/translate", json=body).json()["translations"]
    assert [t["translation"] for t in first] == [t["translation"] for t in again]


def test_translate_with_attention(client: TestClient) -> None:
    res = client.post("/translate", json={"texts": [SENTENCE], "return_attention": True,
                                          "beam_size": 1})
    a = res.json()["translations"][0]["attention"]
    t, s = len(a["tgt_tokens"]), len(a["src_tokens"])
    assert len(a["weights"]) == t and len(a["weights"][0]) == 1  # one layer
    assert len(a["weights"][0][0]) == 1 and len(a["weights"][0][0][0]) == s  # one head
    for row in a["weights"]:
        assert sum(row[0][0]) == pytest.approx(1.0, abs=2e-3)
    assert a["src_tokens"][-1] == "</s>"


def test_page_and_docs_need_no_network(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text
    assert 'id="go"' in page.text
    docs = client.get("/docs").text
    assert "/assets/swagger-ui-bundle.js" in docs and "cdn.jsdelivr" not in docs
    assert client.get("/assets/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/translate" in schema["paths"]
    assert "beam_size" in schema["components"]["schemas"]["TranslateRequest"]["properties"]


# ----------------------------------------------------------------------------- error paths


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"texts": ["a"] * 5}, 413, "texts: 5 texts in one request; the limit is 4"),
    ({"texts": ["a" * 201]}, 413, "texts.0: 201 characters; the limit is 200 per text"),
    ({"texts": "not a list"}, 422, "texts: Input should be a valid list"),
    ({"texts": [SENTENCE], "beam_size": "wide"}, 422, "beam_size: Input should be a valid"),
    ({"texts": [SENTENCE], "beam_size": 0}, 422, "beam_size: Input should be greater than 0"),
    ({"texts": [SENTENCE], "beam": 4}, 422, "beam: Extra inputs are not permitted"),
    ({"texts": []}, 422, "texts: List should have at least 1 item"),
    ({}, 422, "texts: Field required"),
    ({"texts": [SENTENCE], "beam_size": 2, "n_best": 3}, 422,
     "n_best (3) cannot exceed beam_size (2)"),
    ({"texts": [SENTENCE], "model": "nope"}, 404, "model: no model named 'nope'"),
    ({"texts": [SENTENCE], "beam_size": 5, "repetition_penalty": 1.3}, 422,
     "apply to greedy search (beam_size: 1) and to sampling"),
    ({"texts": [SENTENCE], "top_p": 1.5}, 422, "top_p: Input should be less than or equal"),
])
def test_errors_name_the_field(client: TestClient, body, status: int, message: str) -> None:
    res = client.post("/translate", json=body)
    assert res.status_code == status
    assert message in res.json()["detail"]


def test_malformed_json_is_a_422(client: TestClient) -> None:
    res = client.post("/translate", content=b'{"texts": ["a"',
                      headers={"content-type": "application/json"})
    assert res.status_code == 422
    assert "JSON" in res.json()["detail"]


def test_invalid_utf8_and_oversized_bodies_are_refused_by_name(translator: Translator) -> None:
    app = create_app({"m": translator}, ServeSettings(max_body_bytes=1000))
    with TestClient(app) as c:
        res = c.post("/translate", content=b'{"texts": ["se\xc3\x28al \xff"]}',
                     headers={"content-type": "application/json"})
        assert res.status_code == 400 and "not JSON in UTF-8" in res.json()["detail"]
        res = c.post("/translate", content=b'{"texts": ["' + b"a" * 5000 + b'"]}',
                     headers={"content-type": "application/json"})
        assert res.status_code == 413
        assert res.json()["detail"] == ("request body: 5,015 bytes or more; the limit is "
                                        "1,000")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"texts": ["'
            for _ in range(20):
                yield b"a" * 100
            yield b'"]}'
        res = c.post("/translate", content=chunks(),
                     headers={"content-type": "application/json"})
        assert res.status_code == 413 and "the limit is 1,000" in res.json()["detail"]
        assert c.post("/translate", json={"texts": ["Jesús lloró."]}).status_code == 200


def test_several_models_need_a_name(translator: Translator) -> None:
    app = create_app({"a": translator, "b": translator})
    with TestClient(app) as c:
        res = c.post("/translate", json={"texts": ["Jesús lloró."]})
        assert res.status_code == 422
        assert "model: required when several models are served (a, b)" in res.json()["detail"]
        ok = c.post("/translate", json={"texts": ["Jesús lloró."], "model": "b"})
        assert ok.status_code == 200 and ok.json()["model"] == "b"


def test_timeout_is_a_504(translator: Translator) -> None:
    app = create_app({"m": translator}, ServeSettings(timeout_s=1e-4))
    with TestClient(app) as c:
        res = c.post("/translate", json={"texts": [SENTENCE] * 8, "beam_size": 5})
        assert res.status_code == 504
        assert "request timeout" in res.json()["detail"]


def test_serve_command_errors(capsys) -> None:
    assert main(["serve", "--model", "noequals"]) == 2
    assert "--model 'noequals': expected NAME=RUN_DIR" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "nothing to serve" in capsys.readouterr().err


# ----------------------------------------------------------------------------- batching


def test_concurrent_requests_share_batches(translator: Translator) -> None:
    app = create_app({"m": translator}, ServeSettings(batch_wait_ms=50, max_batch=64))
    texts = [SENTENCE, "Jesús lloró.", "En el principio crió Dios los cielos y la tierra.",
             "Y fué la tarde y la mañana el día primero."] * 4

    async def fire() -> list[dict]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            replies = await asyncio.gather(*[
                c.post("/translate", json={"texts": [t], "beam_size": 2}) for t in texts])
            health = (await c.get("/health")).json()
        assert all(r.status_code == 200 for r in replies)
        return [r.json() for r in replies] + [health]

    *replies, health = asyncio.run(fire())
    expected = translator.translate(texts, beam_size=2)
    assert [r["translations"][0]["translation"] for r in replies] == [e.text for e in expected]
    assert health["texts"]["m"] == len(texts)
    assert health["batches"]["m"] < len(texts)  # grouped into fewer model calls


# ----------------------------------------------------------------------------- loopback


@pytest.fixture(scope="module")
def server(translator: Translator, live_server) -> Iterator[str]:
    with live_server(create_app({"bible-es-en": translator})) as url:
        yield url


def test_bounded_load_on_loopback(server: str) -> None:
    """200 requests at concurrency 16 over real TCP: no errors (the benchmark does 1,000)."""
    sentences = [SENTENCE, "Jesús lloró.", "Y fué la luz.", "Amarás á tu prójimo."]

    async def run() -> list[float]:
        latencies: list[float] = []
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=server, timeout=60) as c:
            async def one(i: int) -> None:
                async with limit:
                    start = time.perf_counter()
                    r = await c.post("/translate", json={"texts": [sentences[i % 4]],
                                                         "beam_size": 1})
                    assert r.status_code == 200, r.text
                    latencies.append(time.perf_counter() - start)
            await asyncio.gather(*[one(i) for i in range(200)])
        return latencies

    latencies = asyncio.run(run())
    assert len(latencies) == 200 and statistics.median(latencies) > 0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install -y chromium)")
def test_browser_translates_and_shows_attention(server: str, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    shot_dir = Path(os.environ.get("HEEDFUL_SCREENSHOT_DIR", tmp_path))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        requests_outside: list[str] = []
        page.on("request", lambda r: requests_outside.append(r.url)
                if not r.url.startswith(server) else None)
        page.goto(server + "/")
        page.fill("#source", "Y vió Dios que la luz era buena.")
        page.click("#go")
        page.wait_for_function("document.getElementById('translation').textContent.length > 0")
        page.wait_for_selector("#heat td")
        translation = page.text_content("#translation")
        assert translation and "light" in translation.lower()
        assert page.locator("#nbest li").count() >= 1
        page.hover("th.tgt >> nth=1")
        assert page.locator("th.src.hl").count() >= 1  # the attended source tokens light up
        assert "attends to" in (page.text_content("#info") or "")
        page.screenshot(path=str(shot_dir / "serve_screenshot.png"), full_page=True)
        browser.close()
    assert requests_outside == []
    assert (shot_dir / "serve_screenshot.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install -y chromium)")
def test_html_export_opens_offline_in_a_browser(translator: Translator, tmp_path: Path) -> None:
    """`heedful attention --html`'s page, opened from disk: no request leaves the file, and
    hovering a target token highlights source tokens."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    from heedful.analysis.plots import attention_html

    r = translator.translate([SENTENCE], return_attention=True, beam_size=1)[0]
    assert r.attention is not None
    page_path = attention_html(r.attention.numpy(), r.src_pieces, r.tgt_pieces,
                               tmp_path / "attention.html", title=r.text)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(page_path.as_uri())
        page.wait_for_selector("#heat td")
        page.hover("th.tgt >> nth=0")
        assert page.locator("th.src.hl").count() >= 1
        browser.close()
    assert requests == [page_path.as_uri()]  # the page itself, nothing else


def test_every_decoding_option_is_in_the_request_schema() -> None:
    from heedful.decoding.options import DECODE_OPTION_NAMES
    from heedful.serving.server import TranslateRequest

    assert set(DECODE_OPTION_NAMES) <= set(TranslateRequest.model_fields)


def test_beam_stop_is_accepted_and_decodes_as_the_python_api(client: TestClient,
                                                             translator: Translator) -> None:
    res = client.post("/translate", json={"texts": [SENTENCE], "beam_size": 4,
                                          "beam_stop": "top_finished"})
    assert res.status_code == 200
    direct = translator.translate([SENTENCE], beam_size=4, beam_stop="top_finished")[0]
    assert res.json()["translations"][0]["translation"] == direct.text
    bad = client.post("/translate", json={"texts": [SENTENCE], "beam_stop": "never"})
    assert bad.status_code == 422 and "beam_stop" in bad.json()["detail"]


@pytest.mark.parametrize(("content", "status", "message"), [
    (b'{"texts": [NaN]}', 422, "texts.0: Input should be a valid string"),
    (b'{"texts": ["\\ud847\\ud880"]}', 422, "texts.0: not valid Unicode"),
    (b'{"texts": ["a"], "constraints": [["\\ud800"]]}', 422, "constraints.0.0: not valid"),
    (b'{"texts": ["a"], "length_penalty": 1e308}', 422, "length_penalty: Input should be"),
    (b'$', 422, "body: JSON decode error"),
    (b'{"\\ud800": 1, "texts": ["a"]}', 422, "body: Input should be a valid string"),
])
def test_inputs_json_cannot_echo_are_refused_not_crashed(client: TestClient, content: bytes,
                                                        status: int, message: str) -> None:
    """Found by benchmarks/fuzz.py: FastAPI's error list echoed bytes, NaN and lone
    surrogates, which JSON cannot carry (a 500); a lone surrogate reached SentencePiece."""
    res = client.post("/translate", content=content,
                      headers={"content-type": "application/json"})
    assert res.status_code == status, res.text
    assert message in res.json()["detail"]
