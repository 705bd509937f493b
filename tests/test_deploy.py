"""`tunelab export` and `tunelab serve` on tiny models: the exported artefact, reloaded by the
engine that serves it, gives the fine-tune's greedy outputs (HF and GGUF f16 identical, q8_0
within a stated tolerance); the check fails an export whose weights were damaged; the
llama.cpp and transformers servers answer as `tunelab predict` does, through the official
openai client and plain HTTP, 8 requests at once, and 4xx for a malformed body; bad input is
one line, exit 2, nothing overwritten."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import build_tokenizer
from helpers import prompts_run, tiny_run_config

import tunelab
from tunelab.cli import main
from tunelab.deploy import gguf_file
from tunelab.runs import RunDir, System

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (tunelab[serve]) is not installed")

Q8_TOLERANCE = 2
"""q8_0 may change at most this many of the 8 test items' greedy outputs."""


def _tiny_llama(path: Path, init: float) -> Path:
    """A 2-layer Llama of width 64 (rows a multiple of 32, as q8_0 blocks need); `init` large
    makes its greedy output depend on the input."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(path)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, initializer_range=init, tie_word_embeddings=False,
    )).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full fine-tune that has learned to answer with a label (its accuracy is above 0)."""
    config = tiny_run_config(_tiny_llama(tmp_path_factory.mktemp("learned"), 0.02),
                             tmp_path_factory.mktemp("runs"), "learned", method={"name": "full"},
                             max_steps=40, eval_every=0, lr=3e-3)
    config.eval.metrics, config.eval.bootstrap = ["classification"], 0
    return tunelab.train(config).run_dir


def _tuned_predictions(run: Path) -> list[str]:
    rows = RunDir(run).eval_dir(System.tuned()).predictions.read_text().splitlines()
    return [json.loads(line)["prediction"] for line in rows]


def _predictions(folder: Path) -> list[str]:
    return [json.loads(line)["prediction"] for line in folder.read_text().splitlines()]


@pytest.fixture(scope="module")
def exported(learned: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("exports")
    hf = tunelab.export(learned, "hf", out / "hf")
    gguf = tunelab.export(learned, "gguf", out / "gguf", quant="f16,q8_0,q4_k_m")
    return {"hf": hf, "gguf": gguf, "out": out}


def test_hf_and_gguf_f16_reload_with_the_fine_tunes_greedy_outputs(learned: Path,
                                                                  exported: dict[str, Any]) -> None:
    tuned = _tuned_predictions(learned)
    # Training moved the weights: the random base writes no label, the fine-tune only labels.
    assert set(tuned) <= {"positive", "negative"} and exported["hf"].tuned_score > 0
    hf_check, gguf_check = exported["hf"], exported["gguf"]
    (hf,), (f16, q8, q4) = hf_check.formats, gguf_check.formats
    assert (hf.label, hf.engine, hf.changed, hf.delta) == ("hf", "transformers", 0, 0.0)
    assert (f16.label, f16.engine, f16.changed) == ("gguf f16", "llama.cpp", 0)
    assert q8.changed <= Q8_TOLERANCE
    out = exported["out"]
    assert _predictions(out / "hf" / "verify" / "export-hf" / "predictions.jsonl") == tuned
    assert _predictions(out / "gguf" / "verify" / "export-gguf-f16" / "predictions.jsonl") == tuned
    # The folder loads with transformers alone, and the GGUF file with llama.cpp alone.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "hf")
    tokenizer = AutoTokenizer.from_pretrained(out / "hf")
    first = json.loads((RunDir(learned).eval_dir(System.tuned()).predictions).read_text().splitlines()[0])
    ids = tokenizer(first["prompt"], add_special_tokens=False, return_tensors="pt").input_ids
    new = model.generate(ids, attention_mask=torch.ones_like(ids))[0, ids.shape[1]:]  # its generation_config
    assert tokenizer.decode(new, skip_special_tokens=True).strip() == tuned[0]
    llm = llama_cpp.Llama(str(out / "gguf" / "learned-f16.gguf"), n_ctx=512, verbose=False)
    text = llm.create_completion(first["prompt"], max_tokens=4, temperature=0.0)["choices"][0]["text"]
    assert text.strip() == tuned[0]
    assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    llm.close()
    manifest = json.loads((out / "gguf" / "export.json").read_text())
    assert manifest["artefacts"] == {"gguf f16": "learned-f16.gguf", "gguf q8_0": "learned-q8_0.gguf",
                                     "gguf q4_k_m": "learned-q4_k_m.gguf"}
    # 64 columns do not fill a 256-wide q4_K block: llama.cpp's fallback is reported, not printed.
    assert (f16.note, q8.note) == ("", "") and "fell back to" in q4.note
    assert f"- gguf q4_k_m: {q4.note}" in (out / "gguf" / "export.md").read_text()
    from tunelab.deploy.serve import Target

    served = Target.of(out / "gguf")
    assert (served.gguf(None), served.gguf("q8_0")) == (out / "gguf" / "learned-f16.gguf",
                                                        out / "gguf" / "learned-q8_0.gguf")
    assert (out / "gguf" / "learned-f16.Modelfile").read_text().count("FROM ./learned-f16.gguf") == 1
    assert f16.size_bytes > q8.size_bytes > 0 and f16.tokens_per_s > 0


def test_the_check_fails_an_export_with_a_zeroed_weight(learned: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    clean = tunelab.export(learned, "gguf", tmp_path / "clean", max_drop=0)
    assert clean.tuned_score > 0 and clean.formats[0].drop == 0  # a score that can drop
    real = gguf_file.GgufArchitecture.tensor

    def zeroed(self: gguf_file.GgufArchitecture, name: str, data: torch.Tensor, config: object) -> torch.Tensor:
        out = real(self, name, data, config)
        return torch.zeros_like(out) if name == "model.embed_tokens.weight" else out

    monkeypatch.setattr(gguf_file.GgufArchitecture, "tensor", zeroed)
    capsys.readouterr()
    assert main(["export", str(learned), "--format", "gguf", "--out", str(tmp_path / "bad"),
                 "--max-drop", "1"]) == 1
    out, err = capsys.readouterr()
    ours = [line for line in err.splitlines() if line.startswith("tunelab:")]
    assert "| FAIL |" in out and len(ours) == 1 and "--max-drop" in ours[0]
    report = json.loads((tmp_path / "bad" / "export.json").read_text())  # written, then failed
    assert report["failed"] == ["gguf f16"] and report["formats"][0]["changed"] > 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tuned_rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in
            RunDir(run).eval_dir(System.tuned()).predictions.read_text().splitlines()]


@pytest.fixture(scope="module")
def predict_answers(learned: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`tunelab predict` on the test items' inputs (no answers given)."""
    inputs = tmp_path_factory.mktemp("predict") / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"text": r["input"]}) + "\n" for r in _tuned_rows(learned)))
    return [json.loads(line)["prediction"] for line in
            tunelab.predict(learned, inputs).read_text().splitlines()]


def _post(port: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """Plain HTTP: (status, JSON body) of POST /v1/completions."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_serve_on_llama_cpp_answers_as_predict_does(learned: Path, exported: dict[str, Any],
                                                    predict_answers: list[str]) -> None:
    import openai
    import uvicorn

    from tunelab.deploy.serve import LlamaCppServer, Target

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(LlamaCppServer().app(Target.of(exported["out"] / "gguf")),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        rows, predicted = _tuned_rows(learned), predict_answers
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")

        def complete(prompt: str) -> str:
            done = client.completions.create(model="learned", prompt=prompt)
            return done.choices[0].text.strip()

        with ThreadPoolExecutor(8) as pool:
            served = list(pool.map(complete, [r["prompt"] for r in rows]))
        assert served == predicted == _tuned_predictions(learned)
        user = rows[0]["prompt"].split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
        chat = client.chat.completions.create(model="learned", messages=[{"role": "user", "content": user}])
        assert (chat.choices[0].message.content or "").strip() == predicted[0]
        status, plain = _post(port, json.dumps({"prompt": rows[1]["prompt"]}).encode())
        assert status == 200 and plain["choices"][0]["text"].strip() == predicted[1]
        for bad in (b"{not json", b"[1, 2]", json.dumps({"prompt": 5}).encode(),
                    json.dumps({"prompt": "word " * 3000}).encode()):
            status, error = _post(port, bad)
            assert status == 400 and "message" in error["error"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_serve_on_transformers_answers_as_predict_does(learned: Path, exported: dict[str, Any],
                                                       predict_answers: list[str],
                                                       tmp_path: Path) -> None:
    import openai

    from tunelab.deploy.serve import Target, TransformersServer

    engine = TransformersServer()
    # A run served directly is merged into a folder carrying the run's generation settings.
    merged = engine.folder(Target.of(learned), tmp_path / "merged")
    written = json.loads((merged / "generation_config.json").read_text())
    assert written["max_new_tokens"] == 4 and written["do_sample"] is False
    port = _free_port()
    server = engine.server(engine.folder(Target.of(exported["out"] / "hf"), tmp_path), "127.0.0.1",
                           port, background=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        for _ in range(100):
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.1)
        rows = _tuned_rows(learned)
        model = str((exported["out"] / "hf").resolve())

        def complete(prompt: str) -> str:
            done = client.completions.create(model=model, prompt=prompt)
            return done.choices[0].text.strip()

        with ThreadPoolExecutor(8) as pool:
            served = list(pool.map(complete, [r["prompt"] for r in rows]))
        assert served == predict_answers == _tuned_predictions(learned)
        for bad in (b"{not json", b"[1, 2]", json.dumps({"model": model, "prompt": 5}).encode()):
            status, _ = _post(port, bad)
            assert 400 <= status < 500
    finally:
        server.kill_server()


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], words: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


def test_bad_input_is_one_line_and_overwrites_nothing(learned: Path, exported: dict[str, Any],
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = str(learned)
    _one_line_exit_2(["export", str(tmp_path / "nope"), "--format", "hf", "--out", str(tmp_path / "o")],
                     capsys, "no such run directory")
    _one_line_exit_2(["export", run, "--format", "onnx", "--out", str(tmp_path / "o")], capsys, "--format onnx")
    _one_line_exit_2(["export", run, "--format", "gguf", "--quant", "q3_x", "--out", str(tmp_path / "o")],
                     capsys, "--quant q3_x")
    _one_line_exit_2(["export", run, "--format", "hf", "--quant", "q8_0", "--out", str(tmp_path / "o")],
                     capsys, "--quant q8_0")
    _one_line_exit_2(["export", run, "--format", "hf", "--limit", "0", "--out", str(tmp_path / "o")],
                     capsys, "--limit 0: must be a whole number >= 1")  # not every item silently
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    _one_line_exit_2(["export", run, "--format", "gguf", "--out", str(taken)], capsys, "not empty")
    assert [p.name for p in taken.iterdir()] == ["keep.txt"] and not (tmp_path / "o").exists()
    _one_line_exit_2(["serve", str(tmp_path / "nope")], capsys, "no such directory")
    _one_line_exit_2(["serve", run, "--engine", "tgi"], capsys, "--engine tgi")
    _one_line_exit_2(["serve", run, "--engine", "llamacpp"], capsys, "serves a GGUF export")
    _one_line_exit_2(["serve", run, "--engine", "vllm"], capsys, "serves a LoRA run")
    _one_line_exit_2(["serve", run, "--quant", "q8_0"], capsys, "serves unquantised weights")
    export = str(exported["out"] / "gguf")
    _one_line_exit_2(["serve", export, "--quant", "q4_0"], capsys, "holds f16, q8_0, q4_k_m")
    _one_line_exit_2(["serve", export, "--engine", "transformers"], capsys, "--engine llamacpp")
    classifier = tmp_path / "classifier-run"
    classifier.mkdir()
    (classifier / "config.yaml").write_text((learned / "config.yaml").read_text().replace(
        "kind: causal", "kind: classifier"))
    _one_line_exit_2(["export", str(classifier), "--format", "gguf", "--out", str(tmp_path / "c")],
                     capsys, "export --format hf")


def test_the_hf_check_runs_the_export_itself_even_when_every_answer_is_cached(
        learned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exported folder generates every item of its check: answers cached for the same
    weights (the run's own evaluation, an earlier export) are not taken as the artefact's."""
    tunelab.export(learned, "hf", tmp_path / "first")  # every answer now in the cache
    ran = prompts_run(monkeypatch)
    check = tunelab.export(learned, "hf", tmp_path / "again")
    assert sum(ran) == check.formats[0].n > 0 and check.formats[0].changed == 0
