"""Only the page itself can drive the standalone server: requests from another site, for
another host name (DNS rebinding), or state-changing ones that say neither, get 403. Plain
HTTP against a real `launch_standalone` server (no browser; the browser case is in
test_ui_browser.py), on gradio 3.41 and 4.x alike."""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import urllib.parse

import pytest

from lib_trainer.commands.ui import exposure_warning, user_and_password
from lib_trainer.ui.same_origin import SameOriginOnly, served_hosts


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(tmp_path, **kwargs):
    from lib_trainer.config import TrainConfig
    from lib_trainer.jobs import LocalTrainService, TrainQueue
    from lib_trainer.ui import launch_standalone

    port = free_port()
    service = LocalTrainService(TrainQueue(str(tmp_path / "queue.json")))
    blocks = launch_standalone(service, TrainConfig().replace(output_dir=str(tmp_path / "out")), "127.0.0.1", port,
                               block=False, **kwargs)
    return blocks, port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    blocks, port = launch(tmp_path_factory.mktemp("origin"))
    yield port
    blocks.close()


def request(port, method, path, headers=None, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode("utf-8", "replace")
    connection.close()
    return response.status, text, response


def websocket_handshake(port, origin: str) -> str:
    """The status line the server answers a websocket handshake with."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall((f"GET /queue/join HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n"
                      "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
        return sock.recv(4096).decode("latin-1").split("\r\n")[0]


def test_the_page_itself_is_served_by_any_of_its_loopback_names(server):
    for host in (f"127.0.0.1:{server}", f"localhost:{server}", f"[::1]:{server}"):
        status, text, _ = request(server, "GET", "/", {"Host": host})
        assert status == 200 and "<html" in text.lower()


def test_another_host_name_is_refused_against_dns_rebinding(server):
    status, text, _ = request(server, "GET", "/", {"Host": f"evil.example:{server}"})
    assert status == 403 and "does not answer to the name 'evil.example" in text and "--allow-host" in text
    assert request(server, "GET", "/config", {"Host": f"127.0.0.1:{server + 1}"})[0] == 403  # another port


def test_requests_from_another_site_are_refused(server):
    body = json.dumps({"data": [], "fn_index": 0, "session_hash": "x"})
    for origin in ("http://evil.example", f"http://evil.example:{server}", "null", f"http://127.0.0.1:{server + 1}"):
        status, text, _ = request(server, "POST", "/run/predict", {"Origin": origin, "Content-Type": "text/plain"},
                                  body)
        assert status == 403 and "another site" in text, origin
        assert request(server, "GET", "/config", {"Origin": origin})[0] == 403  # nor may it read
    assert websocket_handshake(server, "http://evil.example").split()[1] == "403"


def test_a_post_from_the_page_or_from_a_program_goes_through_but_not_one_referred_by_another_page(server):
    body = json.dumps({"data": [], "fn_index": 0, "session_hash": "x"})
    own = {"Content-Type": "application/json"}
    for header in ({"Origin": f"http://127.0.0.1:{server}"}, {"Origin": f"http://localhost:{server}"},
                   {"Referer": f"http://127.0.0.1:{server}/?__theme=dark"},
                   {}):  # curl, a script, gradio 3.41's queue posting to its own /api/predict
        assert request(server, "POST", "/run/predict", {**own, **header}, body)[0] != 403, header
    status, text, _ = request(server, "POST", "/run/predict", {**own, "Referer": "http://evil.example/x"}, body)
    assert status == 403 and "another page" in text


def test_auth_asks_for_gradios_login(tmp_path):
    blocks, port = launch(tmp_path, auth=("ann", "s3cret"))
    try:
        assert request(port, "GET", "/config")[0] == 401
        form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{port}"}
        wrong = urllib.parse.urlencode({"username": "ann", "password": "guess"})
        assert request(port, "POST", "/login", form, wrong)[0] == 400
        status, _, response = request(port, "POST", "/login", form,
                                      urllib.parse.urlencode({"username": "ann", "password": "s3cret"}))
        assert status == 200
        cookie = "; ".join(value.split(";")[0] for key, value in response.getheaders() if key.lower() == "set-cookie")
        assert request(port, "GET", "/config", {"Cookie": cookie})[0] == 200
    finally:
        blocks.close()


def test_serving_beyond_this_machine_without_a_login_warns():
    assert "no login" in exposure_warning("0.0.0.0", None) and "--auth" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("192.168.1.5", None)
    assert exposure_warning("0.0.0.0", ("ann", "pw")) == exposure_warning("127.0.0.1", None) == ""
    assert exposure_warning("localhost", None) == exposure_warning("::1", None) == ""
    assert user_and_password("ann:pa:ss") == ("ann", "pa:ss")
    with pytest.raises(Exception, match="USER:PASSWORD"):
        user_and_password("ann")


def test_the_names_a_server_answers_to():
    assert served_hosts("127.0.0.1", 7870) == {(name, 7870) for name in ("127.0.0.1", "localhost", "::1")}
    assert served_hosts("192.168.1.5", 80, ["train.lan"]) == {("192.168.1.5", 80), ("train.lan", 80)}
    everywhere = served_hosts("0.0.0.0", 7870)
    assert ("localhost", 7870) in everywhere and (socket.gethostname().lower(), 7870) in everywhere


@pytest.mark.parametrize("headers, refused", [
    ({"host": "train.lan"}, False),  # port 80 by default
    ({"host": "train.lan:80", "origin": "http://train.lan"}, False),
    ({"host": "TRAIN.LAN"}, False),
    ({"host": "train.lan:8080"}, True),
    ({}, True),  # HTTP/1.0 without Host
    ({"host": "train.lan", "origin": "https://train.lan"}, True),  # https means port 443
    ({"host": "train.lan", "referer": "http://evil.example/"}, False),  # a GET may be linked from anywhere
    ({"host": "train.lan", "referer": "http://evil.example/", "method": "POST"}, True),
    ({"host": "train.lan", "method": "POST"}, False),  # not from a browser
])
def test_the_rules_in_a_table(headers, refused):
    calls = []

    async def app(scope, receive, send):
        calls.append(scope)

    guard = SameOriginOnly(app, served_hosts("train.lan", 80))
    headers = dict(headers)
    method = headers.pop("method", "GET")
    scope = {"type": "http", "method": method, "scheme": "http",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, None, send))
    assert bool(sent and sent[0]["status"] == 403) == refused and bool(calls) != refused
