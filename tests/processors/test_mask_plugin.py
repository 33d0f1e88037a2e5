import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from structsum.config import Settings
from structsum.models import SummaryRequest
from structsum.processors import mask_plugin
from structsum.processors.mask_plugin import MaskOptions, apply, options_for, wrap


def _config(**extra: Any) -> SimpleNamespace:
    return SimpleNamespace(additional_config=extra)


def _stand_in() -> type:
    """StructuredOutputManager's fill fields as vLLM 0.26/0.32 set them in __init__."""

    class Manager:
        def __init__(self, vllm_config: Any) -> None:
            self.vllm_config = vllm_config
            self.fill_bitmask_parallel_threshold = 128
            if self.fill_bitmask_parallel_threshold < vllm_config.max_num_seqs:
                self.fill_bitmask_parallel_batch_size = 16
                self.executor_for_fillmask = ThreadPoolExecutor(max_workers=1)

    return Manager


def test_plugin_on_fills_masks_in_parallel(caplog: pytest.LogCaptureFixture) -> None:
    manager_class = _stand_in()
    wrap(manager_class)
    config = _config(structsum_masks={"threads": 3, "batch_size": 2})
    config.max_num_seqs = 16
    with caplog.at_level(logging.INFO, logger="vllm.structsum.mask_plugin"):
        manager = manager_class(config)
    assert manager.fill_bitmask_parallel_threshold == 0
    assert manager.fill_bitmask_parallel_batch_size == 2
    assert manager.executor_for_fillmask._max_workers == 3
    assert manager.structsum_mask_threads == 3
    assert "parallel grammar masks, threshold 0, 3 threads" in caplog.text
    manager.executor_for_fillmask.shutdown()


def test_plugin_off_leaves_vllm_alone() -> None:
    manager_class = _stand_in()
    wrap(manager_class)
    config = _config(structsum_masks={"threads": 0, "batch_size": 8})
    config.max_num_seqs = 16
    manager = manager_class(config)
    assert manager.fill_bitmask_parallel_threshold == 128
    assert not hasattr(manager, "executor_for_fillmask")
    assert not hasattr(manager, "structsum_mask_threads")


def test_plugin_replaces_vllms_own_pool() -> None:
    manager_class = _stand_in()
    wrap(manager_class)
    config = _config(structsum_masks={"threads": 2, "batch_size": 4})
    config.max_num_seqs = 256  # vLLM built its pool already
    manager = manager_class(config)
    assert manager.executor_for_fillmask._max_workers == 2
    assert manager.fill_bitmask_parallel_batch_size == 4
    manager.executor_for_fillmask.shutdown()


def test_wrapping_twice_applies_once() -> None:
    manager_class = _stand_in()
    wrap(manager_class)
    wrapped = manager_class.__init__
    wrap(manager_class)
    assert manager_class.__init__ is wrapped


def test_engine_options_beat_the_environment() -> None:
    environ = {"STRUCTSUM_ENGINE__MASK_THREADS": "8"}
    carried = _config(**MaskOptions(0, 8).as_engine_config())
    assert options_for(carried, environ) == MaskOptions(0, 8)
    # an engine structsum did not build: the environment decides
    assert options_for(_config(), environ) == MaskOptions(8, 8)
    env_both = {"STRUCTSUM_ENGINE__MASK_THREADS": "4", "STRUCTSUM_ENGINE__MASK_BATCH_SIZE": "2"}
    assert options_for(_config(), env_both) == MaskOptions(4, 2)
    assert options_for(_config(), {}) == MaskOptions(0, 8)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="mask threads"):
        MaskOptions(-1, 8)
    with pytest.raises(ValueError, match="batch size"):
        MaskOptions(2, 0)


def test_apply_reports_whether_it_acted() -> None:
    target = SimpleNamespace(fill_bitmask_parallel_threshold=128)
    assert apply(target, MaskOptions(0)) is False
    assert target.fill_bitmask_parallel_threshold == 128
    assert apply(target, MaskOptions(1)) is True
    target.executor_for_fillmask.shutdown()


def test_installed_vllm_has_the_fields_the_plugin_sets() -> None:
    """A vLLM that renames them would leave the plugin setting dead attributes."""
    from vllm.v1.structured_output import StructuredOutputManager

    source = inspect.getsource(StructuredOutputManager)
    for field in (
        "fill_bitmask_parallel_threshold",
        "fill_bitmask_parallel_batch_size",
        "executor_for_fillmask",
    ):
        assert f"self.{field}" in source


def test_the_plugin_is_registered_with_vllm() -> None:
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert found.get(mask_plugin.ENTRY_POINT) == "structsum.processors.mask_plugin:register"


SAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "samples" / "meeting.txt"
APPLIED_LINE = "structsum mask plugin: parallel grammar masks, threshold 0, 2 threads, 1 requests"


@pytest.mark.engine
def test_guided_summary_with_parallel_masks_on_the_cpu_build(
    settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin loads in the engine-core process, switches it, and summaries stay valid.

    The applied line is logged by the engine-core process (a child writing to the
    captured file descriptors): it appears only if vLLM loaded the entry point there
    and the settings reached it through the engine config.
    """
    from structsum.processors.engine import VllmEngine
    from structsum.processors.model_store import resolve_model
    from structsum.processors.summary import summarize

    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    monkeypatch.setenv("VLLM_CONFIGURE_LOGGING", "1")
    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    engine_settings = settings.engine.model_copy(
        update={"mask_threads": 2, "mask_batch_size": 1, "max_num_seqs": 4, "kv_cache_space_gib": 1}
    )
    local = settings.model_copy(update={"engine": engine_settings})
    engine = VllmEngine(engine_settings, resolve_model(engine_settings.model, settings.cache_dir))
    try:
        request = SummaryRequest(text=SAMPLE.read_text(), template_id="generic_summary_v1")
        result = summarize(request, engine=engine, settings=local)
    finally:
        engine.close()
    captured = capfd.readouterr()
    assert APPLIED_LINE in captured.out + captured.err
    assert result.valid
    assert result.attempts[-1].guided


def test_vllm_plugins_can_filter_the_plugin_out() -> None:
    assert mask_plugin.registered({})
    assert mask_plugin.registered({"VLLM_PLUGINS": "other,structsum_masks"})
    assert not mask_plugin.registered({"VLLM_PLUGINS": "other"})
