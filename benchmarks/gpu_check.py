"""The checks that need a GPU, prepared as one run of at most 8 minutes on one GPU
(DEVELOPERS.md), every figure printed with the card's name:

  1. training: `tunelab train` on the quickstart's config (the built-in SmolLM2-135M), LoRA and
     full fine-tuning, in fp32, bf16 and fp16 (loss scaling with torch's GradScaler), each in
     its own process: real tokens/s, s/step, peak CUDA memory (summary.json's peak_memory_mb:
     torch.cuda.max_memory_allocated), the first and last loss, the precision and the device
     the run reports
  2. DDP with nccl on one GPU: the LoRA fp32 run again through `tunelab train --nproc 1`
     (torchrun; accelerate sets up the process group): the backend summary.json names, the
     losses against part 1's one-process run
  3. TRL's SFTTrainer on the same card (train_speed.py: its trl and trl-bf16 systems on the
     micro-batches of tunelab's plan, tunelab packed in fp32 and bf16 on the same ones): real
     tokens/s and peak CUDA memory, and their ratios
  4. generation on the GPU: tunelab's `eval.generation.generate` against a plain `generate`
     loop (gen_speed.py's) on the quickstart's prompts at 0 shots, greedy, batch 16, and vLLM's
     `LLM.generate` on the same prompt token ids: items/s and outputs equal to tunelab's. vLLM
     pins its own torch and transformers, so install it in a venv of its own on the GPU
     machine (`python -m venv /tmp/vllm && /tmp/vllm/bin/pip install vllm`) and pass
     `--vllm-python /tmp/vllm/bin/python`: that interpreter runs vLLM in a subprocess on the
     prompts' token ids (without the option, `import vllm` is tried here)

Each part runs even when one before it failed (its error printed); a run that outlives its
timeout is killed with its process group (torchrun's workers too), and a part that would start
after --budget seconds is skipped. `--smoke` runs the same plumbing on this machine's CPU (2
steps, fp32 only): a check of the script, no figures.

    python benchmarks/gpu_check.py [--steps 10] [--items 64] [--vllm-python PATH] [--out FILE]
    python benchmarks/gpu_check.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from printed import add_out_option, tee_stdout

HERE = Path(__file__).resolve().parent
QUICKSTART = HERE.parent / "src" / "tunelab" / "configs" / "quickstart.yaml"
METHODS = {"lora": ["method={name: lora, r: 16, alpha: 32, dropout: 0, target_modules: all-linear}",
                    "train.lr=4e-4"],
           "full": ["method={name: full}", "train.lr=5e-5"]}
"""train_speed.py's: the quickstart's LoRA, and full fine-tuning at its sweep's learning rate."""


VLLM = """
import json, sys, time
from vllm import LLM, SamplingParams
job = json.load(open(sys.argv[1]))
llm = LLM(model=job["model"], dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True,
          seed=0)
params = SamplingParams(temperature=0, max_tokens=job["max_new_tokens"], stop=job["stop"] or None)
prompts = [{"prompt_token_ids": p} for p in job["prompts"]]
llm.generate(prompts, params, use_tqdm=False)  # warm-up
start = time.perf_counter()
done = llm.generate(prompts, params, use_tqdm=False)
seconds = time.perf_counter() - start
print(json.dumps({"texts": [o.outputs[0].text for o in done], "seconds": seconds}))
"""
"""vLLM on the prompts' token ids, greedy (run by --vllm-python, or imported here): JSON of its
texts and the timed generate's seconds, after a warm-up."""


def run_group(args: list[str], timeout: float, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    """`args` in a process group of its own, killed whole (torchrun's workers too) when it
    outlives `timeout`."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RuntimeError(f"{' '.join(args[:4])} ...: killed after {timeout:.0f} s") from None
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def last_lines(text: str, n: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-n:]) or "(no output)"


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    from tunelab.core.machine import cpu_summary

    return f"no GPU: {cpu_summary()} (torch {torch.__version__})"


def train(tmp: Path, name: str, method: str, precision: str, steps: int,
          nproc: int | None = None) -> dict[str, Any]:
    """`tunelab train` of the quickstart's config in its own process(es); its summary and the
    per-step losses."""
    args = [sys.executable, "-m", "tunelab.cli", "train", str(QUICKSTART),
            *METHODS[method], f"train.precision={precision}",
            f"train.max_steps={steps}", "train.log_every=1", "train.eval_every=0",
            f"output_dir={tmp}", f"name={name}", "--no-eval"]
    if nproc:
        args += ["--nproc", str(nproc)]
    start = time.perf_counter()
    done = run_group(args, 300, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode:
        raise RuntimeError(last_lines(done.stderr or done.stdout))
    summary = json.loads((tmp / name / "summary.json").read_text())
    log = [json.loads(x) for x in (tmp / name / "train_log.jsonl").read_text().splitlines()]
    summary["losses"] = [r["loss"] for r in log if "loss" in r]
    summary["wall_s"] = time.perf_counter() - start
    return summary


def part_training(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    precisions = ["fp32"] if args.smoke else ["fp32", "bf16", "fp16"]
    print("| method | precision | real tokens/s | s/step | peak memory (MiB) | first loss | "
          "last loss | ran as | device |")
    print("|---|---|---|---|---|---|---|---|---|")
    runs = {}
    for method in ("lora", "full"):
        for precision in precisions:
            name = f"{method}-{precision}"
            try:
                s = train(tmp, name, method, precision, args.steps)
            except Exception as err:  # noqa: BLE001 - a part's failure is printed, not raised
                print(f"| {method} | {precision} | failed: {last_lines(str(err), 1)[:120]} "
                      "| | | | | | |", flush=True)
                continue
            runs[name] = s
            print(f"| {method} | {precision} | {s['tokens_per_s']:.0f} | "
                  f"{s['train_seconds'] / s['steps']:.3f} | {s['peak_memory_mb']:.0f} | "
                  f"{s['losses'][0]:.5f} | {s['losses'][-1]:.5f} | {s['precision']} | "
                  f"{s['placement'].get('device')} |", flush=True)
    return runs


def part_ddp(tmp: Path, args: argparse.Namespace, one: dict[str, Any] | None) -> None:
    s = train(tmp, "lora-fp32-ddp", "lora", "fp32", args.steps, nproc=1)
    placement = s["placement"]
    print(f"tunelab train --nproc 1: {placement['processes']} process, backend "
          f"{placement['backend']}, device {placement['device']}, {s['tokens_per_s']:.0f} "
          f"real tokens/s, peak {s['peak_memory_mb']:.0f} MiB")
    if one:
        worst = max(abs(a - b) / max(abs(b), 1e-12)
                    for a, b in zip(s["losses"], one["losses"], strict=True))
        print(f"losses against one process without a process group: largest relative "
              f"difference {worst:.2e} over {len(s['losses'])} steps")


def part_trl(tmp: Path, args: argparse.Namespace) -> None:
    """train_speed.py on this machine: TRL's systems and tunelab packed on the same batches."""
    out = tmp / "trl.json"
    variants = "tunelab packed-only" + ("" if args.smoke else ",tunelab packed-only bf16")
    systems = "tunelab,trl" + ("" if args.smoke else ",trl-bf16")
    done = run_group([sys.executable, str(HERE / "train_speed.py"), "--steps",
                      str(max(args.steps, 2)), "--methods", "lora", "--data", "short",
                      "--systems", systems, "--variants", variants, "--json", str(out)], 400)
    if done.returncode or not out.is_file():
        raise RuntimeError(last_lines(done.stderr or done.stdout))
    runs = [r for r in json.loads(out.read_text())["runs"] if "error" not in r]
    print("| system | first-step loss | real tokens/s | s/step | peak memory (MiB) |")
    print("|---|---|---|---|---|")
    for r in runs:  # tunelab logs CUDA memory on a GPU; a worker reports it as peak_cuda_mb
        memory = r.get("peak_cuda_mb", r["peak_rss_mb"])
        print(f"| {r['system']} | {r['first_loss']:.6f} | {r['tokens_per_s']:.0f} | "
              f"{r['s_per_step']:.3f} | {memory:.0f} |")
    ours = [r for r in runs if r["system"].startswith("tunelab")]
    best = max(ours, key=lambda r: r["tokens_per_s"]) if ours else None
    for peer in (r for r in runs if not r["system"].startswith("tunelab")):
        if best:
            print(f"{best['system']} vs {peer['system']}: tokens/s "
                  f"x{best['tokens_per_s'] / peer['tokens_per_s']:.2f}, peak memory "
                  f"x{best.get('peak_cuda_mb', best['peak_rss_mb']) / peer.get('peak_cuda_mb', peer['peak_rss_mb']):.2f}")


def with_vllm(args: argparse.Namespace, model_dir: str, prompts: list[list[int]], gen: Any,
              tmp: Path) -> tuple[list[str], float]:
    """vLLM's texts for the prompts and its generate's seconds (module doc)."""
    job = tmp / "vllm-job.json"
    job.write_text(json.dumps({"model": model_dir, "prompts": prompts, "stop": list(gen.stop),
                               "max_new_tokens": gen.max_new_tokens}))
    if args.vllm_python:
        done = run_group([args.vllm_python, "-c", VLLM, str(job)], 300)
        if done.returncode:
            raise RuntimeError(last_lines(done.stderr or done.stdout))
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        import contextlib
        import io

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(VLLM, "vllm-job", "exec"), {"__name__": "vllm_job"})  # noqa: S102
        answer = json.loads(printed.getvalue().strip().splitlines()[-1])
    return answer["texts"], answer["seconds"]


def part_generation(args: argparse.Namespace, tmp: Path) -> None:
    from gen_speed import naive_generate, quickstart_generation, quickstart_prompts

    from tunelab.eval.generation import cut_at_stop, generate
    from tunelab.models.builtin import builtin_model_dir

    config, task, gen, lm = quickstart_generation(16)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = lm.model.to(device).eval()
    prompts = quickstart_prompts(lm, task, 0, args.items)
    systems: dict[str, Callable[[], list[str]]] = {
        "naive generate loop": lambda: naive_generate(model, lm.tokenizer, prompts, gen),
        "tunelab": lambda: generate(model, lm.tokenizer, prompts, gen, desc="gpu check")}
    outputs, seconds = {}, {}
    if not args.smoke or args.vllm_python:
        try:  # vLLM first: its own process, or imported here
            texts, seconds["vLLM"] = with_vllm(args, str(builtin_model_dir(config.model.name)),
                                               prompts, gen, tmp)
            outputs["vLLM"] = [cut_at_stop(t, gen.stop).strip() for t in texts]
        except Exception as err:  # noqa: BLE001 - the other systems still run
            print(f"vLLM: failed ({last_lines(str(err), 3)}); install it in its own venv and "
                  "pass --vllm-python (module doc)")
    for name, run in systems.items():
        run()  # warm-up (kernels, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs[name] = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[name] = time.perf_counter() - start
    mean = sum(map(len, prompts)) / len(prompts)
    print(f"{len(prompts)} prompts (0 shots, {mean:.0f} tokens on average), greedy, batch "
          f"{gen.batch_size}, max_new_tokens {gen.max_new_tokens}, on {device}")
    for name in outputs:
        same = sum(a == b for a, b in zip(outputs[name], outputs["tunelab"], strict=True))
        print(f"  {name}: {len(prompts) / seconds[name]:.1f} items/s, "
              f"{seconds['naive generate loop'] / seconds[name]:.2f}x the naive loop, "
              f"{same}/{len(prompts)} outputs equal to tunelab's")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, help="training steps per run (default 10; 2 "
                                                  "with --smoke)")
    parser.add_argument("--items", type=int, help="generation prompts (default 64; 8 with "
                                                  "--smoke)")
    parser.add_argument("--parts", default="training,ddp,trl,generation")
    parser.add_argument("--smoke", action="store_true", help="the plumbing on a CPU")
    parser.add_argument("--vllm-python", help="the python of a venv with vLLM (module doc)")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds after which no further part starts (default 480)")
    add_out_option(parser)
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.smoke else 10)
    args.items = args.items or (8 if args.smoke else 64)
    tee_stdout(args.out)
    if not torch.cuda.is_available() and not args.smoke:
        print(f"{device_name()}: these checks need a GPU (--smoke runs their plumbing here)")
        return 2
    print(f"device: {device_name()}", flush=True)
    parts = [p.strip() for p in args.parts.split(",")]
    failed = 0
    one: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        steps: list[tuple[str, Callable[[], object]]] = [
            ("training", lambda: one.update(part_training(tmp, args))),
            ("ddp", lambda: part_ddp(tmp, args, one.get("lora-fp32"))),
            ("trl", lambda: part_trl(tmp, args)),
            ("generation", lambda: part_generation(args, tmp))]
        began = time.perf_counter()
        for name, run in steps:
            if name not in parts:
                continue
            if time.perf_counter() - began > args.budget:
                print(f"\n== {name}: skipped, past the {args.budget:.0f} s budget")
                failed += 1
                continue
            print(f"\n== {name} ({time.strftime('%H:%M:%S')})", flush=True)
            try:
                run()
            except Exception:  # noqa: BLE001 - the next part still runs
                failed += 1
                print(f"{name} FAILED:\n{traceback.format_exc(limit=3)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
