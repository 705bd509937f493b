"""train.precision: auto picks bf16 only where the device multiplies bf16 natively (a CPU with
avx512_bf16 / AMX / Arm BF16, a GPU with bf16 that torch does not emulate), fp32 elsewhere;
the CPU's flags are injected, so every case runs on any machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_run_config

import tunelab
from tunelab.config import TrainConfig
from tunelab.core import machine
from tunelab.core.errors import TunelabError
from tunelab.core.machine import CpuFeatures
from tunelab.training.precision import BF16, FP16, FP32, resolve_precision

CPU = torch.device("cpu")
AVX2_ONLY = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx f16c fma "
             "avx2 bmi2\n")  # an AMD EPYC without AVX-512 (this suite's own machine)
AVX512_NO_BF16 = "flags\t\t: fpu sse avx avx2 avx512f avx512bw avx512vl avx512dq\n"
AVX512_BF16 = "flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
AMX = "flags\t\t: fpu avx2 avx512f avx512bw amx_tile amx_int8 amx_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ARM_PLAIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"


def features(text: str) -> CpuFeatures:
    return CpuFeatures.of_lines(text.splitlines())


@pytest.mark.parametrize(("cpuinfo", "native"), [
    (AVX2_ONLY, False), (AVX512_NO_BF16, False), (AVX512_BF16, True), (AMX, True),
    (ARM_BF16, True), (ARM_PLAIN, False)],
    ids=["avx2", "avx512-without-bf16", "avx512_bf16", "amx", "arm-bf16", "arm"])
def test_auto_is_bf16_only_on_a_cpu_with_bf16_instructions(cpuinfo: str, native: bool) -> None:
    cpu = features(cpuinfo)
    assert cpu.native_bf16 is native
    assert resolve_precision("auto", CPU, cpu) is (BF16 if native else FP32)
    for name, chosen in (("fp32", FP32), ("bf16", BF16), ("fp16", FP16)):  # asked: as asked
        assert resolve_precision(name, CPU, cpu) is chosen


def test_unreadable_cpuinfo_falls_back_to_torchs_check(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "absent")
    assert CpuFeatures.here().flags is None
    for says in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda says=says: says)
        assert resolve_precision("auto", CPU) is (BF16 if says else FP32)


def test_this_machines_flags_are_read() -> None:
    here = CpuFeatures.here()
    if here.flags is None:
        pytest.skip("no /proc/cpuinfo here")
    assert here.native_bf16 is bool(here.flags & {"avx512_bf16", "amx_bf16", "bf16"})


def test_auto_on_a_gpu_asks_torch_without_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    for native in (True, False):
        def bf16_supported(including_emulation: bool = True, native: bool = native) -> bool:
            asked.append(including_emulation)
            return native or including_emulation  # pre-Ampere: only emulated
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_supported)
        assert resolve_precision("auto", torch.device("cuda"), features(AMX)) is \
            (BF16 if native else FP32)
    assert asked == [False, False]


def test_config_takes_auto_and_refuses_other_names() -> None:
    assert TrainConfig(precision="auto").precision == "auto"
    with pytest.raises(TunelabError, match="train.precision"):
        TrainConfig(precision="fp8")  # type: ignore[arg-type]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text()
                                   .splitlines()) if "loss" in r]


def test_auto_trains_as_the_precision_it_picks(tiny_llama: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """auto on an AVX2 CPU is fp32 (the same losses, number for number); on an AMX CPU it is
    bf16 autocast (close to fp32's, not equal); summary.json says which it picked."""
    if torch.cuda.is_available():
        pytest.skip("a GPU decides here, not the CPU's flags")
    runs = {}
    for name, cpuinfo, asked in (("fp32", AVX2_ONLY, "fp32"), ("auto-avx2", AVX2_ONLY, "auto"),
                                 ("auto-amx", AMX, "auto")):
        monkeypatch.setattr(CpuFeatures, "here", classmethod(lambda cls, text=cpuinfo:
                                                              features(text)))
        config = tiny_run_config(tiny_llama, tmp_path, name, max_steps=4, eval_every=0,
                                 method={"name": "full"})
        config.train.precision = asked
        runs[name] = tunelab.train(config, evaluate_after=False).run_dir
    picked = {n: json.loads((r / "summary.json").read_text())["precision"]
              for n, r in runs.items()}
    assert picked == {"fp32": "fp32", "auto-avx2": "fp32", "auto-amx": "bf16"}
    fp32 = losses(runs["fp32"])
    assert len(fp32) == 4 and fp32[-1] != fp32[0]  # it trained
    assert losses(runs["auto-avx2"]) == fp32
    assert losses(runs["auto-amx"]) == pytest.approx(fp32, rel=2e-2)
    assert losses(runs["auto-amx"]) != fp32  # autocast was on
