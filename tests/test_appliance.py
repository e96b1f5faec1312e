"""`borealis up` end to end: real subprocesses on free ports, SmolLM2, the official openai client and
LangChain's ChatOpenAI, unchanged."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.procs import cli_argv, free_port, wait_until

pytestmark = pytest.mark.slow


def processes_with_env(name: str, value: str) -> list[int]:
    """PIDs whose environment has name=value: the appliance's children, wherever they are."""
    wanted = f"{name}={value}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_up_serves_chat_from_smollm2_and_stops_cleanly(
    base_env: dict[str, str], smollm2_dir: Path, tmp_path: Path
) -> None:
    env = dict(base_env)
    del env["BOREALIS_REDIS_URL"]  # exercise the embedded Redis, as on a fresh machine
    api_port = free_port()
    env.update(
        {
            "BOREALIS_API_PORT": str(api_port),
            "BOREALIS_WORKER_PORT": str(free_port()),
            "BOREALIS_MODEL_PATH": str(smollm2_dir),
            "BOREALIS_THREADS": "2",
        }
    )
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(cli_argv("up"), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Borealis is ready" in log.read_text(), 300, "borealis up", up, log)
        assert f"http://127.0.0.1:{api_port}/dashboard" in log.read_text()
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{api_port}/v1", api_key="unused", max_retries=0)
        reply = api.chat.completions.create(
            model="smollm2-135m-instruct",
            temperature=0,
            max_tokens=20,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
        assert "Paris" in (reply.choices[0].message.content or "")
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in api.chat.completions.create(
                model="smollm2-135m-instruct",
                temperature=0,
                max_tokens=20,
                stream=True,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
            )
            if chunk.choices
        )
        assert streamed == reply.choices[0].message.content
        chat = ChatOpenAI(
            base_url=f"http://127.0.0.1:{api_port}/v1",
            api_key=SecretStr("unused"),
            model="smollm2-135m-instruct",
            temperature=0,
            max_completion_tokens=20,
            max_retries=0,
        )
        question = "What is the capital of France?"
        answer = chat.invoke(question)
        assert answer.content == reply.choices[0].message.content  # a second client, the same greedy text
        assert "".join(str(part.content) for part in chat.stream(question)) == answer.content
        logs = Path(env["BOREALIS_HOME"]) / "logs"
        assert {"control-plane.log", "inference-worker.log", "training-worker.log"} <= {
            p.name for p in logs.iterdir()
        }
        admin_token = (Path(env["BOREALIS_HOME"]) / "admin-token").read_text().strip()
        assert (Path(env["BOREALIS_HOME"]) / "admin-token").stat().st_mode & 0o077 == 0
        workers = httpx.get(
            f"http://127.0.0.1:{api_port}/api/workers", headers={"authorization": f"Bearer {admin_token}"}
        ).json()
        assert len(workers) == 1 and workers[0]["healthy"]
    finally:
        up.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert up.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert time.monotonic() - started < 60
    assert processes_with_env("BOREALIS_HOME", env["BOREALIS_HOME"]) == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2)


def test_up_serves_a_model_directory_under_its_own_name(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = dict(base_env)
    api_port = free_port()
    env.update({"BOREALIS_API_PORT": str(api_port), "BOREALIS_WORKER_PORT": str(free_port())})
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            cli_argv("up", "--model", str(tiny_model_dir)), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: "Borealis is ready" in log.read_text(), 300, "borealis up --model", up, log)
        models = httpx.get(f"http://127.0.0.1:{api_port}/v1/models", timeout=10).json()["data"]
        assert [m["id"] for m in models] == [tiny_model_dir.name]
        body = {"model": tiny_model_dir.name, "prompt": "hello", "max_tokens": 4, "temperature": 0}
        assert (
            httpx.post(f"http://127.0.0.1:{api_port}/v1/completions", json=body, timeout=60).status_code
            == 200
        )
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0, log.read_text()[-3000:]
    refused = subprocess.run(
        cli_argv("up", "--model", str(tmp_path)), env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "not a Hugging Face model directory" in refused.stderr
