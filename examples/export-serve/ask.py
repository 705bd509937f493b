"""Start `tunelab serve` on an export, send it one chat request, then two it must refuse (a
`max_tokens` that is no number, a body that is no JSON), print each request and its answer,
and stop the server.

    python examples/export-serve/ask.py EXPORT_DIR [--quant q8_0] [serve options]

What a user would do by hand with `tunelab serve EXPORT_DIR` in one terminal and curl in
another, as one command whose output the export and serve guide shows.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

PROMPT = ("Classify the sentiment of this movie review. Answer with one word: positive or "
          "negative.\n\na gorgeous , witty , seductive movie .")  # the run's instruction, then the input


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int, path: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait(port: int, server: subprocess.Popen[bytes]) -> None:
    for _ in range(240):
        if server.poll() is not None:
            raise SystemExit(f"tunelab serve exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("tunelab serve did not answer within 120 s")


def show(port: int, path: str, body: bytes) -> None:
    status, text = post(port, path, body)
    print(f"POST {path} {body.decode()}")
    try:
        answer = json.loads(text)
        for key in ("id", "created", "system_fingerprint"):
            answer.pop(key, None)  # differ from one call to the next
        text = json.dumps(answer)
    except json.JSONDecodeError:
        pass
    print(f"-> {status} {text}\n", flush=True)


def main() -> None:
    port = free_port()
    command = ["tunelab", "serve", *sys.argv[1:], "--port", str(port)]
    print("$ " + " ".join(command[:-2]) + " --port PORT\n", flush=True)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(port, server)
        show(port, "/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": PROMPT}]}).encode())
        show(port, "/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": "many"}).encode())
        show(port, "/v1/chat/completions", b"{not json")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
