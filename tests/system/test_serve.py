"""`chexnet serve` as a real process on loopback: predict, per-file errors, limits, the token, many clients
at once on one model, and the page driven in headless Chromium (DevTools protocol)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from chexnet.core.errors import ChexnetError
from chexnet.deploy.serve import is_loopback, kind_of, serve
from tests.helpers import LABELS, free_port, http_get, http_post, multipart_body, png_bytes, save_test_model

TOKEN = "test-token"
MAX_FILES = 4


def _dicom(tmp: Path) -> bytes:
    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    dataset.Modality = "DX"
    dataset.save_as(tmp / "x.dcm")
    return (tmp / "x.dcm").read_bytes()


def _post(url: str, files: list[tuple[str, bytes]], token: str | None = TOKEN) -> tuple[int, dict]:
    return http_post(url, files, token)  # tests/helpers.py's client, with this module's token


def _get(url: str, token: str | None = TOKEN) -> tuple[int, dict]:
    return http_get(url, token)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    save_test_model(root / "models" / "m.pth", image_size=64)
    port = free_port()
    env = os.environ | {"CHEXNET_CACHE": str(root / "cache")}
    command = [sys.executable, "-m", "chexnet", "serve", "--model", str(root / "models" / "m.pth"), "--port",
               str(port), "--token", TOKEN, "--engine", "onnx", "--max-files", str(MAX_FILES),
               "--max-request-mb", "2"]  # fmt: skip
    log = (root / "server.log").open("w")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if _get(f"{base}/health", None)[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"the server did not start: {(root / 'server.log').read_text()[-2000:]}")
    yield {"base": base, "root": root, "pid": process.pid}
    process.terminate()
    process.wait(timeout=30)
    assert "Traceback" not in (root / "server.log").read_text()


def test_predict_answers_each_file_and_a_bad_file_fails_alone(server):
    files = [("a.png", png_bytes(1)), ("x.dcm", _dicom(server["root"])), ("notes.txt", b"hello")]
    status, body = _post(f"{server['base']}/predict?heatmaps=true", files)
    assert status == 200 and body["engine"].startswith("onnx")
    a, x, notes = body["results"]
    assert a["ok"] and x["ok"] and set(a["probabilities"]) == set(LABELS)
    assert a["positives"] == [f for f in LABELS if a["probabilities"][f] >= body["thresholds"]["values"][f]]
    for finding, url in a.get("heatmaps", {}).items():
        assert finding in a["positives"] and base64.b64decode(url.split(",", 1)[1])[:4] == b"\x89PNG"
    assert (notes["file"], notes["ok"], notes["status"]) == ("notes.txt", False, 415)
    status, body = _post(f"{server['base']}/predict", [("notes.txt", b"hello")])
    assert status == 422 and body["results"][0]["status"] == 415  # every file failed


def test_predict_json_and_the_service_give_the_same_document_for_the_same_files(server, tmp_path: Path):
    """One schema (chexnet.deploy.answers) for both paths: ``chexnet predict --json`` and ``POST
    /predict`` on the same model, engine and files (two images, a DICOM, a broken file) give the same
    document; probabilities may differ only by the batch the engine ran them in."""
    folder = tmp_path / "in"
    folder.mkdir()
    files = {
        "a.png": png_bytes(11),
        "b.png": png_bytes(12, (120, 70)),
        "c.dcm": _dicom(tmp_path),
        "d.png": b"\x89PNG\r\n\x1a\nbroken",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    env = os.environ | {"CHEXNET_CACHE": str(server["root"] / "cache")}
    command = [sys.executable, "-m", "chexnet", "predict", *sorted(str(folder / name) for name in files),
               "--model", str(server["root"] / "models" / "m.pth"), "--engine", "onnx", "--json"]  # fmt: skip
    printed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=server["root"]
    )
    assert printed.returncode == 1, printed.stderr[-2000:]  # the broken file: the others still answered
    from_cli = json.loads(printed.stdout)
    status, from_service = _post(
        f"{server['base']}/predict", [(str(folder / n), d) for n, d in sorted(files.items())]
    )
    assert status == 200
    probabilities = []
    for document in (from_cli, from_service):
        probabilities.append([result.pop("probabilities", {}) for result in document["results"]])
    assert from_cli == from_service  # everything but the probabilities: exactly
    for cli, service in zip(*probabilities, strict=True):
        assert cli.keys() == service.keys()
        assert all(abs(cli[k] - service[k]) < 1e-5 for k in cli)  # ONNX Runtime, batch of 3 against 1
    assert [r["ok"] for r in from_cli["results"]] == [True, True, True, False]
    assert from_cli["results"][3]["status"] == 422 and from_cli["model"]["findings"] == list(LABELS)


def test_the_model_record_and_the_token(server):
    status, model = _get(f"{server['base']}/model")
    assert status == 200 and model["record"]["labels"] == list(LABELS) and model["record"]["image_size"] == 64
    assert _get(f"{server['base']}/model", None)[0] == 401
    assert _get(f"{server['base']}/model", "wrong")[0] == 401
    assert _post(f"{server['base']}/predict", [("a.png", png_bytes(2))], token=None)[0] == 401
    assert _get(f"{server['base']}/health", None)[0] == 200  # health needs no token


def _headers_only_post(base: str, headers: dict[str, str]) -> tuple[int, dict]:
    """POST /predict's headers and no body, and read the answer: how a limit that is checked on the
    headers is tested without racing the server's close of the connection."""
    import http.client

    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    try:
        connection.putrequest("POST", "/predict")
        all_headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "multipart/form-data; boundary=x"}
        for key, value in {**all_headers, **headers}.items():
            connection.putheader(key, value)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_limits_get_their_4xx_and_the_service_keeps_answering(server):
    base = server["base"]
    status, body = _post(f"{base}/predict", [(f"{i}.png", png_bytes(i)) for i in range(MAX_FILES + 1)])
    assert status == 400 and "at most 4" in body["error"]
    # > 2 MB announced: refused on the header, before a byte of the body is read. Only the headers are
    # sent: a body sent whole would race the server closing the connection (a broken pipe on the
    # client's side, not an answer; CI saw it once with urllib's chunked upload)
    status, body = _headers_only_post(base, {"Content-Length": str(3 * 2**20)})
    assert status == 413 and "larger than" in body["error"]
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 M pixels in a few kB: a decompression bomb
    status, body = _post(f"{base}/predict", [("bomb.png", bomb.getvalue()), ("a.png", png_bytes(4))])
    assert status == 200 and body["results"][0]["status"] == 413 and body["results"][1]["ok"]
    status, body = _headers_only_post(base, {"Transfer-Encoding": "chunked"})  # no length: refused
    assert status == 411 and "Content-Length" in body["error"]
    assert _get(f"{base}/health", None)[0] == 200


def test_concurrent_clients_share_one_model_and_get_no_error(server):
    """8 clients × 5 requests at once: every answer a 200, batched by the one worker, and the server's
    memory does not grow by a model per client (DenseNet121 here: ~30 MB of weights each)."""
    import psutil

    process = psutil.Process(server["pid"])
    before = process.memory_info().rss
    _, health = _get(f"{server['base']}/health", None)

    def client(seed: int) -> list[int]:
        return [
            _post(f"{server['base']}/predict", [("c.png", png_bytes(seed * 10 + i))])[0] for i in range(5)
        ]

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for batch in pool.map(client, range(8)) for s in batch]
    assert statuses == [200] * 40
    _, after = _get(f"{server['base']}/health", None)
    assert after["batches_run"] - health["batches_run"] <= 40
    assert process.memory_info().rss - before < 8 * 30 * 2**20


def test_an_address_off_this_machine_needs_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(ChexnetError, match="bearer token"):
        serve(Path("unused.pth"), host="0.0.0.0", token=None)


def test_the_file_type_comes_from_the_bytes_not_the_name():
    assert kind_of(png_bytes(0)) == ".png" and kind_of(b"\xff\xd8\xff\xe0" + b"0" * 200) == ".jpg"
    assert kind_of(b"\0" * 128 + b"DICM" + b"\0" * 10) == ".dcm"
    with pytest.raises(ChexnetError, match="not a PNG, JPEG or DICOM"):
        kind_of(b"GIF89a" + b"\0" * 200)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium: apt-get install chromium (README, Test)")
def test_the_page_in_chromium_uploads_an_image_and_shows_findings_and_heat_maps(server, tmp_path: Path):
    """Headless Chromium, driven through its DevTools protocol: load the page, give the token, put a
    file in the file input, wait for the answer, read the findings table and the overlay images off the
    page, and save a screenshot (benchmarks/results/serve_page.png is one) to look at."""
    websocket = pytest.importorskip("websocket")
    image = tmp_path / "study.png"
    image.write_bytes(png_bytes(7, shape=(256, 256)))
    port = free_port()
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    browser = subprocess.Popen([_chromium(), *flags, "about:blank"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        target = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5) as response:
                    target = next(t for t in json.loads(response.read()) if t["type"] == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.2)
        connection = websocket.create_connection(
            target["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
        )
        calls = iter(range(1, 10**6))

        def cdp(method: str, **params):
            ident = next(calls)
            connection.send(json.dumps({"id": ident, "method": method, "params": params}))
            while True:
                message = json.loads(connection.recv())
                if message.get("id") == ident:
                    assert "error" not in message, message
                    return message["result"]

        def evaluate(expression: str):
            return cdp("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

        cdp("Page.enable")
        cdp("Page.navigate", url=f"{server['base']}/")
        for _ in range(100):
            if evaluate("document.readyState") == "complete" and evaluate(
                "!!document.getElementById('files')"
            ):
                break
            time.sleep(0.1)
        evaluate(f"document.getElementById('token').value = {json.dumps(TOKEN)}")
        root = cdp("DOM.getDocument")["root"]["nodeId"]
        node = cdp("DOM.querySelector", nodeId=root, selector="#files")["nodeId"]
        cdp("DOM.setFileInputFiles", nodeId=node, files=[str(image)])
        evaluate("document.getElementById('files').dispatchEvent(new Event('change'))")
        for _ in range(600):
            if evaluate("document.querySelectorAll('table.findings tr').length") or 0:
                break
            time.sleep(0.1)
        rows = evaluate("[...document.querySelectorAll('table.findings tr')].map(r => r.innerText)")
        positives = evaluate("document.querySelectorAll('tr.positive').length")
        overlays = evaluate("[...document.querySelectorAll('img.overlay')].map(i => i.naturalWidth)")
        status = evaluate("document.getElementById('status').innerText")
        shot = cdp("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
        if os.environ.get("CHEXNET_KEEP_SCREENSHOT"):
            shutil.copy(tmp_path / "page.png", os.environ["CHEXNET_KEEP_SCREENSHOT"])
        # a proxy in front of the service answers an HTML error page: the page says so, never hangs
        evaluate(
            "window.fetch = async () => new Response('<html><body>502 Bad Gateway</body></html>', "
            "{status: 502, statusText: 'Bad Gateway', headers: {'Content-Type': 'text/html'}})"
        )
        evaluate("send(document.getElementById('files').files)")
        for _ in range(100):
            refused = evaluate("document.getElementById('status').innerText")
            if not refused.startswith("Reading"):
                break
            time.sleep(0.1)
    finally:
        browser.kill()
    assert status.startswith("Done: 1 of 1") and len(rows) == len(LABELS) + 1  # the header and each finding
    assert all(any(f in row for row in rows) for f in LABELS)
    assert len(overlays) == positives and all(width > 0 for width in overlays)  # a heat map per positive
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert refused.startswith("Refused (502 Bad Gateway)") and "other than JSON" in refused, refused


def test_the_openapi_document_declares_the_token_every_refusal_and_a_non_empty_file_list(server):
    status, document = _get(f"{server['base']}/openapi.json", None)
    assert status == 200
    predict = document["paths"]["/predict"]["post"]
    assert {"400", "401", "411", "413", "415", "422", "500", "504"} <= set(predict["responses"])
    assert "HTTPBearer" in document["components"]["securitySchemes"] and predict["security"]
    body = document["components"]["schemas"][
        predict["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    ]
    assert body["properties"]["files"]["minItems"] == 1
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PredictAnswer"
    )
    empty, kind = multipart_body([])
    request = urllib.request.Request(
        f"{server['base']}/predict",
        data=empty,
        method="POST",
        headers={"Content-Type": kind, "Authorization": f"Bearer {TOKEN}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400 and "error" in json.loads(refused.value.read())


@pytest.mark.skipif(
    shutil.which("schemathesis") is None and not (Path(sys.executable).parent / "schemathesis").exists(),
    reason="schemathesis is not installed (requirements.txt)",
)
def test_a_schema_based_fuzz_run_finds_no_server_error_and_no_schema_violation(server):
    """Schemathesis generates requests from the service's own OpenAPI document (bounded: 30 s, 25
    examples an operation, seeded; every operation is still run) and checks every answer: no 5xx, status
    codes, content types, headers and bodies as declared. Left out: ``positive_data_acceptance``: the
    schema can only say "binary" for a file, and random bytes are rightly refused (each file's 415/422,
    as declared)."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{server['base']}/openapi.json",
        "-H",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "25",
        "--max-time",
        "30",
        "--workers",
        "1",
        "--seed",
        "1",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=os.environ | {"SCHEMATHESIS_HOOKS": ""}
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "generated" in result.stdout and "failure" not in result.stdout.split("Test cases:")[-1], (
        result.stdout[-2000:]
    )


def test_a_token_with_characters_outside_ascii_is_a_401_not_a_500(server):
    import http.client

    connection = http.client.HTTPConnection(server["base"].removeprefix("http://"), timeout=30)
    connection.putrequest("GET", "/model")
    connection.putheader("Authorization", "Bearer t\xf6k\xe9n".encode("latin-1"))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 401 and "bearer token" in json.loads(answer.read())["error"]
    connection.close()
