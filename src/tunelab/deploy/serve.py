"""`tunelab serve`: an OpenAI-compatible endpoint (/v1/chat/completions, /v1/completions) on an
existing serving engine, never a server of tunelab's own.

- `LlamaCppServer`: llama-cpp-python's server (FastAPI) on a GGUF export; the chat template
  is the one inside the GGUF file.
- `TransformersServer`: `transformers serve` on an HF export (or a run merged on the fly, as
  the export writes it); its generation defaults come from the folder's generation_config.json,
  and its own handlers answer a malformed request 400/422.
- `VllmServer`: `vllm serve` of the run's base model with its LoRA adapter (`--enable-lora`),
  on a GPU.

tunelab adds one thing in front of the llama.cpp app (`RequestGuard`, an ASGI wrapper): the run's generation settings fill what a request leaves out (max_tokens,
temperature 0 for a greedy run, stop), and a body that is not a JSON object or does not
validate is answered 400 with the reason, before the engine sees it. The server binds
127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tunelab.config import GenerationConfig, RunConfig
from tunelab.core.deferred import torch, transformers
from tunelab.core.errors import TunelabError
from tunelab.deploy.export_formats import HfFormat, read_manifest
from tunelab.deploy.gguf_file import import_llama_cpp
from tunelab.methods import get_method
from tunelab.models.pretrained import resolve_model_dir
from tunelab.runs import RunDir
from tunelab.runs.merge import merged_run_model

if TYPE_CHECKING:
    from transformers.cli.serve import Serve

Scope = MutableMapping[str, Any]  # Any: ASGI messages are dicts of mixed values
Message = MutableMapping[str, Any]  # Any: as above
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Target:
    """What `tunelab serve` was pointed at: a run directory or an export folder."""

    path: Path
    run: RunDir
    config: RunConfig
    export: dict[str, object] | None
    """The export folder's export.json (None: a run directory)."""

    @classmethod
    def of(cls, path: str | Path) -> Target:
        folder = Path(path)
        if not folder.is_dir():
            raise TunelabError(f"{path}: no such directory; give a run directory or a folder "
                               "tunelab export wrote")
        if RunDir(folder).config_file.is_file():
            run = RunDir(folder)
            return cls(folder, run, run.read_config(), None)
        manifest = read_manifest(folder)
        run = RunDir(Path(str(manifest["run_dir"])))
        if not run.config_file.is_file():
            raise TunelabError(f"{folder}/export.json: its run {run.root} is gone; serve the "
                               "export with the run directory beside it, or export again")
        return cls(folder, run, run.read_config(), manifest)

    def artefacts(self) -> dict[str, Path]:
        """The export's artefacts by label ('hf', 'gguf q8_0'), in the order export wrote them."""
        if self.export is None:
            return {}
        names = dict(self.export.get("artefacts") or {})  # type: ignore[call-overload]  # JSON
        return {str(label): self.path / str(name) for label, name in names.items()}

    def gguf(self, quant: str | None) -> Path | None:
        """The GGUF file to serve: the one of `quant`, else the first written (None: none)."""
        files = {label.removeprefix("gguf "): path for label, path in self.artefacts().items()
                 if path.suffix == ".gguf"}
        if quant is None:
            return next(iter(files.values()), None)
        if quant not in files:
            raise TunelabError(f"--quant {quant}: {self.path} holds "
                               f"{', '.join(files) or 'no GGUF file'}; choose one of those or "
                               f"export --format gguf --quant {quant}")
        return files[quant]


def request_defaults(gen: GenerationConfig) -> dict[str, object]:
    """The run's generation settings as OpenAI request fields."""
    defaults: dict[str, object] = {"max_tokens": gen.max_new_tokens}
    if gen.do_sample:
        defaults.update(temperature=gen.temperature, top_p=gen.top_p)
    else:
        defaults.update(temperature=0.0)
    if gen.stop:
        defaults["stop"] = list(gen.stop)
    return defaults


class RequestGuard:
    """ASGI wrapper: fill request defaults, answer a malformed body 400 (see module doc)."""

    def __init__(self, app: App, defaults: dict[str, object],
                 validators: dict[str, Callable[[dict[str, object]], object]]) -> None:
        self.app, self.defaults, self.validators = app, defaults, validators

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        validate = self.validators.get(scope.get("path", ""))
        if scope["type"] != "http" or scope.get("method") != "POST" or validate is None:
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
        try:
            data = json.loads(body or b"null")
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            for key, value in self.defaults.items():
                data.setdefault(key, value)
            validate(data)
        except ValueError as err:  # JSON errors and pydantic's ValidationError are ValueErrors
            first = (str(err).strip().splitlines() or ["invalid"])
            await _error(send, 400, f"invalid request: {' '.join(first[:3])[:400]}")
            return
        payload = json.dumps(data).encode()
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(payload)).encode())]}

        async def replay() -> Message:
            return {"type": "http.request", "body": payload, "more_body": False}

        await self.app(scope, replay, send)


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ServeEngine(ABC):
    name: ClassVar[str]

    @abstractmethod
    def run(self, target: Target, host: str, port: int, quant: str | None) -> None:
        """Serve until interrupted (`quant`: the GGUF file, for the engines that read one)."""


class LlamaCppServer(ServeEngine):
    name: ClassVar[str] = "llamacpp"

    def app(self, target: Target, quant: str | None = None) -> App:
        """The llama.cpp server's app for the export's GGUF file of `quant` (default: the
        first written), guarded."""
        import_llama_cpp("--engine llamacpp")
        try:
            from llama_cpp.server.app import create_app
            from llama_cpp.server.settings import ModelSettings, ServerSettings
            from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest
        except ImportError as err:
            raise TunelabError(f"--engine llamacpp: llama-cpp-python's server is missing ({err}); "
                               "pip install -c constraints.txt 'tunelab[serve]'") from None
        gguf_file = target.gguf(quant)
        if gguf_file is None:
            raise TunelabError(f"{target.path}: --engine llamacpp serves a GGUF export; run "
                               f"tunelab export {target.run.root} --format gguf --out DIR, then "
                               "tunelab serve DIR")
        threads = max(1, torch.get_num_threads())
        model = ModelSettings(model=str(gguf_file), model_alias=target.config.name,
                              n_ctx=0, n_threads=threads, n_threads_batch=threads,
                              logits_all=False, verbose=False)
        app = create_app(server_settings=ServerSettings(), model_settings=[model])
        validators: dict[str, Callable[[dict[str, object]], object]] = {
            "/v1/completions": CreateCompletionRequest.model_validate,
            "/v1/chat/completions": CreateChatCompletionRequest.model_validate,
        }
        return RequestGuard(app, request_defaults(target.config.eval.generation), validators)

    def run(self, target: Target, host: str, port: int, quant: str | None) -> None:
        import uvicorn

        uvicorn.run(self.app(target, quant), host=host, port=port, log_level="warning")


class TransformersServer(ServeEngine):
    """`transformers serve` on a plain model folder: an HF export as it is, or a run merged into
    a scratch folder written as `tunelab export --format hf` writes it (the run's generation
    settings as generation_config.json). transformers' own handlers validate requests (400/422
    for a malformed body) and apply the folder's chat template."""

    name: ClassVar[str] = "transformers"

    def folder(self, target: Target, scratch: Path) -> Path:
        """The plain model folder to serve (writes the merged run under `scratch` if needed)."""
        if target.export is not None and (target.path / "config.json").is_file():
            return target.path
        if target.export is not None:
            raise TunelabError(f"{target.path}: --engine transformers serves an HF export or a "
                               f"run; serve {target.run.root} or this folder with --engine "
                               "llamacpp")
        lm = merged_run_model(target.run.root)
        assert isinstance(lm.model, transformers.PreTrainedModel)  # merged_run_model checked it
        return HfFormat().write(lm.model, lm.tokenizer, scratch, target.config, []).path

    def server(self, folder: Path, host: str, port: int, background: bool = False) -> Serve:
        """transformers' Serve on `folder` (started in a thread when `background`; stop it
        with its kill_server())."""
        try:
            from transformers.cli.serve import Serve
        except ImportError as err:
            raise TunelabError(f"--engine transformers: transformers' server is missing ({err}); "
                               "pip install -c constraints.txt 'tunelab[serve]'") from None
        return Serve(force_model=str(folder.resolve()), host=host, port=port,
                     device="auto" if torch.cuda.is_available() else "cpu",
                     non_blocking=background)

    def run(self, target: Target, host: str, port: int, quant: str | None) -> None:
        _no_quant(self, quant)
        with tempfile.TemporaryDirectory(prefix="tunelab-serve-") as scratch:
            self.server(self.folder(target, Path(scratch) / "merged"), host, port)


class VllmServer(ServeEngine):
    name: ClassVar[str] = "vllm"

    def command(self, target: Target, host: str, port: int) -> list[str]:
        """`vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER ...`"""
        weights = target.run.weights(get_method(target.config.method["name"]))
        if not (weights / "adapter_config.json").is_file():
            raise TunelabError(f"{target.run.root}: --engine vllm serves a LoRA run with its "
                               "adapter; export this run (--format hf) and serve it with "
                               "--engine transformers")
        gen = target.config.eval.generation
        overrides = {"max_new_tokens": gen.max_new_tokens,
                     "temperature": gen.temperature if gen.do_sample else 0.0}
        return ["vllm", "serve", resolve_model_dir(target.config.model.name), "--enable-lora",
                "--lora-modules", f"{target.config.name}={weights}", "--host", host,
                "--port", str(port), "--generation-config", "auto",
                "--override-generation-config", json.dumps(overrides)]

    def run(self, target: Target, host: str, port: int, quant: str | None) -> None:
        _no_quant(self, quant)
        command = self.command(target, host, port)
        if shutil.which("vllm") is None:
            raise TunelabError("--engine vllm: vLLM is not installed (it needs a GPU machine: "
                               "pip install vllm); use --engine llamacpp on a CPU")
        os.execvp(command[0], command)


def _no_quant(engine: ServeEngine, quant: str | None) -> None:
    if quant is not None:
        raise TunelabError(f"--quant {quant}: --engine {engine.name} serves unquantised weights; "
                           "drop --quant, or serve a GGUF export with --engine llamacpp")


SERVERS: dict[str, ServeEngine] = {s.name: s for s in (LlamaCppServer(), TransformersServer(),
                                                        VllmServer())}


def get_server(name: str | None, target: Target) -> ServeEngine:
    """--engine NAME, else llama.cpp for a GGUF export and transformers for anything else."""
    if name is None:
        return SERVERS["llamacpp" if target.gguf(None) else "transformers"]
    try:
        return SERVERS[name]
    except KeyError:
        raise TunelabError(f"--engine {name}: choose one of {', '.join(SERVERS)}") from None


def serve(path: str | Path, engine: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, quant: str | None = None) -> None:
    """Serve a run or an export until interrupted (see the module docstring)."""
    if not 0 < port < 65536:
        raise TunelabError(f"--port {port}: give a port between 1 and 65535")
    target = Target.of(path)
    get_server(engine, target).run(target, host, port, quant)
