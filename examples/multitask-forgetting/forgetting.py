"""Catastrophic forgetting, and two remedies, on the built-in model with real data.

Task A: sentiment of movie-review sentences (built-in, 120 train / 60 test).
Task B: BIG-bench multiemo (English review sentences): positive, negative, neutral or ambivalent
        (2411 train / 100 test) - a neighbouring task whose label set overlaps A's.

Four runs of SmolLM2-135M-Instruct, each scored on A, B and news-text bits per byte (the retention
suite, before and after every run, with paired-bootstrap CIs):

  1. full fine-tuning on A                       (the model that knows A)
  2. then full fine-tuning on B                  (sequential: does A survive?)
  3. then LoRA on B instead                      (PEFT: does A survive better?)
  4. full fine-tuning on A+B, one mixture        (multi-task, same total steps as 1+2)

    python examples/multitask-forgetting/forgetting.py [--out runs/forgetting] [--steps-a 30]
        [--steps-b 60]

Needs the BIG-bench data once: `tunelab data fetch bigbench --task multiemo` (done if missing).
Writes OUT/forgetting.md (the tables in docs/guides/multitask-forgetting.md) and
OUT/forgetting.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

import tunelab
from tunelab.config import (
    DataConfig,
    EvalConfig,
    GenerationConfig,
    MixtureConfig,
    ModelConfig,
    RetentionConfig,
    RunConfig,
    TrainConfig,
    TrainTaskConfig,
    to_dict,
)
from tunelab.core.paths import bigbench_dir

SENTIMENT = DataConfig(source="builtin:movie_sentiment", template="chat", validation_size=20,
                       test_size=60, split_seed=0, max_length=256)
SENTIMENT_EVAL = EvalConfig(metrics=["classification"], labels=["positive", "negative"],
                            generation=GenerationConfig(max_new_tokens=8, batch_size=16))
EMOTION_EVAL = EvalConfig(metrics=["classification"],
                          labels=["positive", "negative", "neutral", "ambivalent"],
                          generation=GenerationConfig(max_new_tokens=8, batch_size=16))


def emotion_data() -> DataConfig:
    path = bigbench_dir() / "multiemo" / "reviews_sentence_en" / "task.json"
    if not path.is_file():
        from tunelab.eval.datasets.fetch import fetch_bigbench

        fetch_bigbench(["multiemo"])
    return DataConfig(source=str(path), format="bigbench", template="chat", validation_size=20,
                      test_size=100, split_seed=0, max_length=256)


def task_file(folder: Path, name: str, data: DataConfig, eval_config: EvalConfig) -> str:
    """An evaluation task with exactly the training config's data, template and test split."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "output_type": "generate",
                                    "data": to_dict(data), "eval": to_dict(eval_config)}))
    return str(path)


def run(name: str, out: Path, model: str, method: dict, data: DataConfig, eval_config: EvalConfig,
        steps: int, lr: float, kept: list[str], **extra) -> dict:
    config = RunConfig(
        name=name, output_dir=str(out), model=ModelConfig(name=model), data=data,
        method=method, eval=eval_config,
        train=TrainConfig(max_steps=steps, batch_size=8, lr=lr, warmup_ratio=0.1, eval_every=15,
                          log_every=5, seed=0),
        retention=RetentionConfig(tasks=kept, limit=100), **extra)
    if (out / name / "retention.json").is_file():  # finished earlier: reuse
        print(f"{name}: done before, reusing {out / name}")
    else:
        print(f"{name}: {method['name']} from {model}, {steps} steps")
        tunelab.train(config)
    saved = json.loads((out / name / "retention.json").read_text())
    return {row["task"]: row for row in saved["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/forgetting")
    parser.add_argument("--steps-a", type=int, default=30, help="optimizer steps on task A")
    parser.add_argument("--steps-b", type=int, default=60, help="optimizer steps on task B")
    args = parser.parse_args()
    out = Path(args.out)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    emotion = emotion_data()
    a_task = task_file(out / "tasks", "sentiment", SENTIMENT, SENTIMENT_EVAL)
    b_task = task_file(out / "tasks", "emotion", emotion, EMOTION_EVAL)
    kept = [a_task, b_task, "news_lm"]
    full, lora = {"name": "full"}, {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.05,
                                    "target_modules": "all-linear"}
    base = "smollm2-135m"
    steps_a, steps_b = args.steps_a, args.steps_b

    a = run("1-full-A", out, base, full, SENTIMENT, SENTIMENT_EVAL, steps_a, 5e-5, kept)
    a_model = str(out / "1-full-A" / "model")
    seq = run("2-full-A-then-full-B", out, a_model, full, emotion, EMOTION_EVAL, steps_b, 5e-5, kept)
    peft = run("3-full-A-then-lora-B", out, a_model, lora, emotion, EMOTION_EVAL, steps_b, 4e-4, kept)
    # Multi-task: the same total steps as 1 + 2, both tasks in every stretch of training.
    multi = run("4-full-A+B-mixture", out, base, full, SENTIMENT, SENTIMENT_EVAL, steps_a + steps_b,
                5e-5, kept,
                tasks=[TrainTaskConfig(name="sentiment", data=SENTIMENT, eval=SENTIMENT_EVAL),
                       TrainTaskConfig(name="emotion", data=emotion, eval=EMOTION_EVAL)],
                mixture=MixtureConfig(sampling="uniform", eval_limit=0))

    def cell(row: dict, which: str) -> str:
        value = row[which]
        return f"{value:.3f}" if row["lower_is_better"] else f"{value:.1f}"

    def change(row: dict) -> str:
        fmt = "{:+.3f}" if row["lower_is_better"] else "{:+.1f}"
        return f"{fmt.format(row['delta'])} [{fmt.format(row['ci'][0])}, {fmt.format(row['ci'][1])}]"

    names = {"sentiment": "A: sentiment acc", "emotion": "B: emotion acc",
             "news_lm": "news bits/byte (lower is better)"}
    header = ["system", *names.values()]
    rows = [["base model", *[cell(a[t], "before") for t in names]],
            ["1. full on A", *[cell(a[t], "after") for t in names]],
            ["2. then full on B (sequential)", *[cell(seq[t], "after") for t in names]],
            ["3. then LoRA on B", *[cell(peft[t], "after") for t in names]],
            ["4. full on A+B (multi-task)", *[cell(multi[t], "after") for t in names]]]
    changes = [["2. sequential full: change from 1", *[change(seq[t]) for t in names]],
               ["3. LoRA on B: change from 1", *[change(peft[t]) for t in names]],
               ["4. multi-task: change from base", *[change(multi[t]) for t in names]]]

    def table(head: list[str], body: list[list[str]]) -> str:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])

    text = "\n\n".join([
        f"Scores on held-out test items (sentiment 60, emotion 100, news 100 articles); "
        f"{steps_a} optimizer steps on A, {steps_b} on B, {steps_a + steps_b} on the mixture; "
        "batch 8; full fine-tuning at lr 5e-5, LoRA (r 16, all linear layers) at 4e-4.",
        table(header, rows),
        "Changes with paired-bootstrap 95% confidence intervals (same items before and after):",
        table(["run", *names.values()], changes),
        f"Total wall time: {(time.perf_counter() - start) / 60:.0f} min "
        "(2 CPU cores, runs reused from an earlier call are not timed again)."])
    (out / "forgetting.md").write_text(text + "\n")
    (out / "forgetting.json").write_text(json.dumps(
        {"steps_a": steps_a, "steps_b": steps_b, "runs": {"1-full-A": a, "2-full-A-then-full-B": seq,
                                  "3-full-A-then-lora-B": peft, "4-full-A+B-mixture": multi}},
        indent=1))
    print(text)


if __name__ == "__main__":
    main()
