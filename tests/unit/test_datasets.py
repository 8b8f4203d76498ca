"""Finding and downloading MovieLens (the download is served from loopback here)."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile

import pytest

from streamrec.datasets import DownloadError, download_movielens, find_movielens


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def http_server():
    payloads: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = payloads.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", payloads
    server.shutdown()


def test_download_unpacks_the_archive(tmp_path, http_server) -> None:
    base, payloads = http_server
    payloads["/ml-100k.zip"] = _zip(
        {"ml-100k/u.data": "1\t2\t3\t4\n", "ml-100k/u.item": "x", "ml-100k/u.user": "y", "../evil": "z"}
    )
    folder = download_movielens(tmp_path, f"{base}/ml-100k.zip")
    assert sorted(p.name for p in folder.iterdir()) == ["u.data", "u.item", "u.user"]
    env = {"STREAMREC_CACHE_DIR": str(tmp_path.parent / "nocache"), "STREAMREC_DATA_DIR": str(tmp_path)}
    assert find_movielens(env, download=False) == folder


def test_download_failures_are_clear(tmp_path, http_server) -> None:
    base, payloads = http_server
    with pytest.raises(DownloadError, match="could not download"):
        download_movielens(tmp_path, f"{base}/missing.zip")
    payloads["/notzip"] = b"hello"
    with pytest.raises(DownloadError, match="did not return a zip"):
        download_movielens(tmp_path, f"{base}/notzip")
    payloads["/partial.zip"] = _zip({"ml-100k/u.data": "1"})
    with pytest.raises(DownloadError, match="lacks"):
        download_movielens(tmp_path, f"{base}/partial.zip")


def test_find_downloads_into_the_cache_when_missing(tmp_path, http_server) -> None:
    base, payloads = http_server
    payloads["/z"] = _zip({"ml-100k/u.data": "d", "ml-100k/u.item": "i", "ml-100k/u.user": "u"})
    env = {"STREAMREC_CACHE_DIR": str(tmp_path), "STREAMREC_MOVIELENS_URL": f"{base}/z"}
    assert find_movielens(env) == tmp_path / "data" / "ml-100k"
    env["STREAMREC_MOVIELENS_URL"] = f"{base}/gone"
    env["STREAMREC_CACHE_DIR"] = str(tmp_path / "other")
    assert find_movielens(env) is None
