"""Download the full Fashion-MNIST from its public mirrors into a cache folder, checked by MD5.

Each file is streamed into a temporary file next to its final name, its MD5
is checked against the official sum, and only then is it renamed into place:
a killed or failed download never leaves a half-written file under the
official name. A mirror that fails (connection error, HTTP error, short body,
wrong checksum) is skipped for the next one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from camlens._util.files import atomic_writer, sha256_file
from camlens._util.progress import progress_bar
from camlens.errors import DataError

__all__ = ["ENV_VAR", "MD5", "MIRRORS", "data_dir", "download_fashion_mnist"]

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


def _fetch(url: str, dest: Path, md5: str, timeout: float, progress: bool) -> None:
    """Stream ``url`` into a temporary file beside ``dest``; rename only if complete and the MD5 matches."""
    with atomic_writer(dest, suffix=".part") as f, urllib.request.urlopen(url, timeout=timeout) as resp:
        h = hashlib.md5()
        got = 0
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        bar = progress_bar(total, dest.name, enabled=progress, unit="B", unit_scale=True, leave=False)
        try:
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                h.update(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and got != total:
            raise DataError(f"connection closed after {got} of {total} bytes")
        if h.hexdigest() != md5:
            raise DataError(f"MD5 {h.hexdigest()} does not match the official {md5}")


def download_fashion_mnist(
    root: str | Path | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    md5: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Make sure the four Fashion-MNIST files are in the cache folder, downloading what is missing.

    A file already there with the right MD5 is kept; one with a wrong MD5 is
    downloaded again (and replaced only once the new one checks out).

    Args:
        root: the cache folder (see :func:`data_dir` for the default).
        mirrors: base URLs, tried in order for each file (default :data:`MIRRORS`).
        md5: file name -> expected hex MD5 (default :data:`MD5`, the official sums).
        timeout: seconds per network operation.
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
    for name, expected in md5.items():
        dest = folder / name
        if dest.is_file() and sha256_file(dest, "md5") == expected:
            continue
        failures: list[str] = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name
            try:
                _fetch(url, dest, expected, timeout, progress)
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
