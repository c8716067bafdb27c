"""Download the full Fashion-MNIST from its public mirrors into a cache folder, checked by MD5.

Each file is streamed into a temporary file next to its final name, its MD5
is checked against the official sum, and only then is it renamed into place:
a killed or failed download never leaves a half-written file under the
official name. A mirror that fails (connection error, HTTP error, short or
overlong body, wrong checksum, too slow) is skipped for the next one.

Every fetch is bounded: it reads at most the file's known size (else the
server's ``Content-Length``, else :data:`MAX_BYTES`), each read waits at most
``timeout`` seconds, and the whole fetch gives up after ``deadline`` seconds
(its socket is shut down, whatever call is waiting on it). Temporary
``.part`` files left by a killed run are removed once they are stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from camlens._util.files import atomic_writer, sha256_file
from camlens._util.progress import progress_bar
from camlens.errors import DataError

__all__ = ["ENV_VAR", "MAX_BYTES", "MD5", "MIRRORS", "SIZES", "data_dir", "download_fashion_mnist"]

#: the environment variable that overrides the cache folder.
ENV_VAR = "CAMLENS_DATA"

#: public mirrors of the four official gzip files, tried in order.
MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

#: the official MD5 sums of the full set's gzip files (Zalando Research).
MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

#: the official files' sizes in bytes, keyed by their MD5: a file whose sum we know has a known
#: size, and a custom ``md5=`` table (other files) never gets a wrong cap.
SIZES: dict[str, int] = {
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d": 26_421_880,
    "25c81989df183df01b3e8a0aad5dffbe": 29_515,
    "bef4ecab320f06d8554ea6380940ec79": 4_422_102,
    "bb300cfdad3c16e7a12a480ee83cd310": 5_148,
}

#: the most bytes read for a file of unknown size whose server sends no ``Content-Length``.
MAX_BYTES = 64 << 20

#: a ``.part`` file untouched for this many seconds is from a dead run: a live fetch writes at
#: least once per read timeout (30 s by default) or gives up.
STALE_PART_AGE = 600.0

_CHUNK = 1 << 16


def data_dir(root: str | Path | None = None) -> Path:
    """The cache folder: ``root`` if given, else ``$CAMLENS_DATA``, else ``~/.cache/camlens/fashion-mnist``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "camlens" / "fashion-mnist"


class _Deadline:
    """Shuts down every socket a fetch opens once ``seconds`` have passed, unblocking any waiting call."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                with contextlib.suppress(OSError):  # closed already
                    s.shutdown(socket.SHUT_RDWR)

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
        if self.expired:
            self._expire()

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener whose HTTP(S) connections register their sockets here."""
        watch = self

        class Conn(http.client.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                watch.add(self.sock)

        class SConn(http.client.HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                watch.add(self.sock)

        class Handler(urllib.request.HTTPHandler):
            def http_open(self, req: Any) -> Any:
                return self.do_open(Conn, req)

        class SHandler(urllib.request.HTTPSHandler):
            def https_open(self, req: Any) -> Any:
                return self.do_open(SConn, req, context=self._context)  # type: ignore[attr-defined]

        return urllib.request.build_opener(Handler, SHandler)


def _limit(resp: Any, md5: str, max_bytes: int) -> tuple[int, int | None]:
    """``(cap, expected)``: the most bytes to read, and the exact size the body must have (if known)."""
    length = resp.headers.get("Content-Length")
    sent = int(length) if length and length.isdigit() else None
    known = SIZES.get(md5)
    if known is not None:
        if sent is not None and sent != known:
            raise DataError(f"the server announces {sent} bytes; the official file is {known} bytes")
        return known, known
    if sent is not None and sent > max_bytes:
        raise DataError(f"the server announces {sent} bytes, more than the {max_bytes}-byte cap")
    return (sent if sent is not None else max_bytes), sent


def _fetch(url: str, dest: Path, md5: str, timeout: float, deadline: float, max_bytes: int, progress: bool) -> None:
    """Stream ``url`` into a temporary file beside ``dest``; rename only if complete and the MD5 matches."""
    with _Deadline(deadline) as watch, atomic_writer(dest, suffix=".part") as f:
        try:
            with watch.opener().open(url, timeout=timeout) as resp:
                cap, expected = _limit(resp, md5, max_bytes)
                h = hashlib.md5()
                got = 0
                bar = progress_bar(expected, dest.name, enabled=progress, unit="B", unit_scale=True, leave=False)
                try:
                    # read1: return what has arrived (a trickle must not block one read for hours);
                    # ask for one byte past the cap, so an overlong body is seen.
                    while chunk := resp.read1(min(_CHUNK, cap + 1 - got)):
                        got += len(chunk)
                        if got > cap:
                            raise DataError(f"the server sent more than {cap} bytes, the most expected; "
                                            "is it the right file?")
                        f.write(chunk)
                        h.update(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                        if watch.expired:
                            break
                finally:
                    if bar is not None:
                        bar.close()
        except (OSError, http.client.HTTPException, ValueError):
            if not watch.expired:
                raise
        if watch.expired:
            raise DataError(f"gave up after the {deadline:g} s deadline (timeout per read {timeout:g} s); "
                            "the mirror is too slow")
        if expected is not None and got != expected:
            raise DataError(f"connection closed after {got} of {expected} bytes")
        if h.hexdigest() != md5:
            raise DataError(f"MD5 {h.hexdigest()} does not match the official {md5}")


def _sweep_parts(folder: Path, names: Sequence[str]) -> None:
    """Remove our stale temporary files (``.NAME.*.part``, untouched for :data:`STALE_PART_AGE`)."""
    now = time.time()
    for name in names:
        for p in folder.glob(f".{name}.*.part"):
            try:
                if p.is_file() and not p.is_symlink() and now - p.stat().st_mtime > STALE_PART_AGE:
                    p.unlink()
            except OSError:
                pass  # gone already, or not ours to remove: harmless either way


def download_fashion_mnist(
    root: str | Path | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    md5: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    deadline: float = 900.0,
    max_bytes: int = MAX_BYTES,
    progress: bool = True,
) -> Path:
    """Make sure the four Fashion-MNIST files are in the cache folder, downloading what is missing.

    A file already there with the right MD5 is kept; one with a wrong MD5 is
    downloaded again (and replaced only once the new one checks out).

    Args:
        root: the cache folder (see :func:`data_dir` for the default).
        mirrors: base URLs, tried in order for each file (default :data:`MIRRORS`).
        md5: file name -> expected hex MD5 (default :data:`MD5`, the official sums).
        timeout: seconds each network operation (connect, one read) may wait.
        deadline: seconds one file may take from one mirror, all in all; then
            the next mirror is tried.
        max_bytes: the most bytes read for a file whose size is not known (not
            in :data:`SIZES`) and whose server sends no ``Content-Length``.
        progress: show a tqdm bar per file (when tqdm is installed).

    Returns:
        The folder, ready for :func:`camlens.demo.data.load_split`.

    Raises:
        DataError: a file could not be had from any mirror; the message lists
            what each mirror did and what to try.
    """
    mirrors = MIRRORS if mirrors is None else mirrors
    md5 = MD5 if md5 is None else md5
    if not mirrors:
        raise DataError("mirrors=() is empty; give at least one base URL")
    folder = data_dir(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {folder} ({e}); pass another with --data-dir "
                        f"or set {ENV_VAR}") from None
    _sweep_parts(folder, list(md5))
    for name, expected in md5.items():
        dest = folder / name
        size = SIZES.get(expected)
        if dest.is_file() and (size is None or dest.stat().st_size == size) and sha256_file(dest, "md5") == expected:
            continue
        failures: list[str] = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name
            try:
                _fetch(url, dest, expected, timeout, deadline, max_bytes, progress)
                break
            except (urllib.error.URLError, http.client.HTTPException, OSError, DataError, ValueError) as e:
                if isinstance(e, urllib.error.HTTPError):
                    reason: object = f"HTTP {e.code} {e.reason}"
                else:
                    reason = e.reason if isinstance(e, urllib.error.URLError) else e
                failures.append(f"  {url}: {type(e).__name__}: {reason}")
        else:
            raise DataError(
                f"could not download {name} into {folder} from any mirror:\n" + "\n".join(failures) + "\n"
                f"check the network, or put the official files in {folder} yourself "
                f"(or point {ENV_VAR} / --data-dir at a folder that has them)"
            )
    return folder
