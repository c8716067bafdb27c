"""The downloader against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import os
import stat
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

import camlens.demo.data.download as dl
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


# --- hostile servers: endless, trickling, stalling, lying; every fetch bounded in bytes and time --------------

STOP = threading.Event()


class Hostile(http.server.BaseHTTPRequestHandler):
    """/endless/ streams zeros with no Content-Length; /trickle/ sends one byte per 0.3 s; /slowhead/ trickles
    its headers; /stall/ sends headers then nothing; /huge/ announces a terabyte; /good/ serves FILES."""

    def do_GET(self) -> None:
        mode, _, name = self.path.strip("/").partition("/")
        body = FILES.get(name, b"x" * 100)
        try:
            if mode == "slowhead":
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                while not STOP.wait(0.3):
                    self.wfile.write(b"X-Slow: 1\r\n")
                    self.wfile.flush()
                return
            self.send_response(200)
            if mode == "huge":
                self.send_header("Content-Length", str(10**12))
            elif mode != "endless":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "endless":
                while not STOP.is_set():
                    self.wfile.write(bytes(1 << 16))
            elif mode == "trickle":
                for b in body:
                    if STOP.wait(0.3):
                        return
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
            elif mode == "stall":
                STOP.wait(10)
            elif mode == "good":
                self.wfile.write(body)
        except OSError:  # the client hung up, as it should
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def hostile():
    STOP.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    STOP.set()
    httpd.shutdown()
    httpd.server_close()


ONE = {NAMES[3]: SUMS[NAMES[3]]}  # one small file: t10k-labels


def _get(tmp_path, url, **kw):
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        download_fashion_mnist(tmp_path, mirrors=[url], md5=ONE, progress=False, **kw)
    return str(e.value), time.monotonic() - t0


def test_endless_body_of_unknown_size_stops_at_the_byte_cap(hostile, tmp_path):
    msg, took = _get(tmp_path, hostile + "/endless/", max_bytes=1 << 20)
    assert f"the server sent more than {1 << 20} bytes, the most expected" in msg and NAMES[3] in msg
    assert took < 5 and list(tmp_path.iterdir()) == []


def test_endless_body_of_a_known_file_stops_at_its_official_size(hostile, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.SIZES, ONE[NAMES[3]], len(FILES[NAMES[3]]))
    msg, took = _get(tmp_path, hostile + "/endless/")  # the 64 MiB default cap is not what stops it
    assert f"the server sent more than {len(FILES[NAMES[3]])} bytes" in msg
    assert took < 5 and list(tmp_path.iterdir()) == []


def test_announced_size_is_checked_before_reading(hostile, tmp_path, monkeypatch):
    msg, _ = _get(tmp_path, hostile + "/huge/", max_bytes=1 << 20)
    assert f"the server announces {10**12} bytes, more than the {1 << 20}-byte cap" in msg
    monkeypatch.setitem(dl.SIZES, ONE[NAMES[3]], 5148)
    msg, _ = _get(tmp_path, hostile + "/good/")
    assert f"the server announces {len(FILES[NAMES[3]])} bytes; the official file is 5148 bytes" in msg
    assert list(tmp_path.iterdir()) == []


def test_official_sizes_sit_beside_the_official_sums():
    assert set(dl.SIZES) == set(dl.MD5.values())
    assert dl.SIZES[dl.MD5["train-images-idx3-ubyte.gz"]] == 26_421_880


@pytest.mark.parametrize("mode", ["trickle", "slowhead"])
def test_trickling_server_gives_up_at_the_deadline(hostile, tmp_path, mode):
    msg, took = _get(tmp_path, f"{hostile}/{mode}/", timeout=1.0, deadline=1.5)
    assert "gave up after the 1.5 s deadline (timeout per read 1 s); the mirror is too slow" in msg
    assert 1.4 < took < 3.5 and list(tmp_path.iterdir()) == []


def test_stalled_read_times_out_then_next_mirror(hostile, tmp_path):
    msg, took = _get(tmp_path, hostile + "/stall/", timeout=0.5)
    assert "timed out" in msg and took < 3 and list(tmp_path.iterdir()) == []
    download_fashion_mnist(tmp_path, mirrors=[hostile + "/stall/", hostile + "/good/"], md5=ONE,
                           timeout=0.5, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [NAMES[3]]


def test_stale_part_files_of_ours_are_swept_fresh_and_foreign_ones_kept(server, tmp_path):
    old = tmp_path / f".{NAMES[3]}.k1ll3d.part"
    fresh = tmp_path / f".{NAMES[3]}.l1v3.part"
    foreign = tmp_path / ".notes.txt.abc.part"
    for p in (old, fresh, foreign):
        p.write_bytes(b"half")
    long_ago = time.time() - dl.STALE_PART_AGE - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(foreign, (long_ago, long_ago))
    download_fashion_mnist(tmp_path, mirrors=[server + "/good/"], md5=ONE, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([NAMES[3], fresh.name, foreign.name])


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_cached_files_get_normal_modes(server, tmp_path, umask):
    old = os.umask(umask)
    try:
        download_fashion_mnist(tmp_path, mirrors=[server + "/good/"], md5=ONE, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / NAMES[3]).stat().st_mode) == 0o666 & ~umask
