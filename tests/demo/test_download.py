"""The downloader against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from camlens.demo.data import load_split, sample_dir
from camlens.demo.data.download import ENV_VAR, data_dir, download_fashion_mnist
from camlens.errors import DataError

NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FILES = {n: (sample_dir() / n).read_bytes() for n in NAMES}
SUMS = {n: hashlib.md5(b).hexdigest() for n, b in FILES.items()}


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves FILES under /good/, wrong bytes under /bad/, half a body then a hang-up under /drop/."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        mode, _, name = self.path.strip("/").partition("/")
        if name not in FILES:
            self.send_error(404)
            return
        body = FILES[name]
        if mode == "bad":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_good_files_are_downloaded_checked_and_readable(server, tmp_path):
    folder = download_fashion_mnist(tmp_path / "c", mirrors=[server + "/good/"], md5=SUMS, progress=False)
    for n in NAMES:
        assert (folder / n).read_bytes() == FILES[n]
    assert _leftovers(folder) == []
    images, labels = load_split(folder, "train")
    assert images.shape == (3615, 28, 28) and labels.shape == (3615,)


def test_files_already_there_are_not_fetched_again(server, tmp_path):
    download_fashion_mnist(tmp_path, mirrors=[server + "/good/"], md5=SUMS, progress=False)
    Handler.requests.clear()
    download_fashion_mnist(tmp_path, mirrors=[server + "/good/"], md5=SUMS, progress=False)
    assert Handler.requests == []


def test_wrong_checksum_tries_next_mirror(server, tmp_path):
    Handler.requests.clear()
    download_fashion_mnist(tmp_path, mirrors=[server + "/bad/", server + "/good/"], md5=SUMS, progress=False)
    assert (tmp_path / NAMES[0]).read_bytes() == FILES[NAMES[0]]
    assert Handler.requests[:2] == ["/bad/" + NAMES[0], "/good/" + NAMES[0]]
    assert _leftovers(tmp_path) == []


def test_wrong_checksum_everywhere_leaves_nothing(server, tmp_path):
    with pytest.raises(DataError) as e:
        download_fashion_mnist(tmp_path, mirrors=[server + "/bad/"], md5=SUMS, progress=False)
    msg = str(e.value)
    assert NAMES[0] in msg and "does not match the official" in msg and ENV_VAR in msg
    assert list(tmp_path.iterdir()) == []


def test_dropped_connection_leaves_nothing_then_next_mirror(server, tmp_path):
    with pytest.raises(DataError, match=r"connection closed after|IncompleteRead"):
        download_fashion_mnist(tmp_path, mirrors=[server + "/drop/"], md5=SUMS, progress=False)
    assert list(tmp_path.iterdir()) == []
    download_fashion_mnist(tmp_path, mirrors=[server + "/drop/", server + "/good/"], md5=SUMS, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NAMES)


def test_corrupt_cached_file_is_replaced(server, tmp_path):
    (tmp_path / NAMES[1]).write_bytes(b"garbage")
    download_fashion_mnist(tmp_path, mirrors=[server + "/good/"], md5=SUMS, progress=False)
    assert (tmp_path / NAMES[1]).read_bytes() == FILES[NAMES[1]]


def test_missing_file_on_server_is_a_clear_error(server, tmp_path):
    with pytest.raises(DataError, match="404"):
        download_fashion_mnist(tmp_path, mirrors=[server + "/good/"], md5={"nope.gz": "0" * 32}, progress=False)


def test_cli_full_downloads_into_the_cache_and_trains(server, tmp_path, monkeypatch, capsys):
    import camlens.demo.data.download as dl
    from camlens.cli import main
    from camlens.demo.checkpoint import read_meta

    monkeypatch.setattr(dl, "MIRRORS", (server + "/drop/", server + "/good/"))
    monkeypatch.setattr(dl, "MD5", SUMS)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    rc = main(["train", "--full", "--out", str(tmp_path / "ck"), "--epochs", "1", "--train-limit", "64",
               "--val-limit", "64", "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(NAMES)
    assert read_meta(tmp_path / "ck")["data"]["source"] == str((tmp_path / "cache").resolve())


def test_no_mirrors_is_an_error(tmp_path):
    with pytest.raises(DataError, match="mirrors=\\(\\) is empty"):
        download_fashion_mnist(tmp_path, mirrors=(), progress=False)


def test_cache_folder_env_var_and_override(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "camlens" / "fashion-mnist"
