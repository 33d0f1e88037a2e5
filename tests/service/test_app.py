"""The Celery app is configured from settings: JSON only, late acks, prefixes."""

from __future__ import annotations

from structsum.config import QueueSettings, Settings
from structsum.service.app import TASK_NAMES, build_app, celery_config


def _settings(**queue: object) -> Settings:
    return Settings(queue=QueueSettings.model_validate(queue))


def test_json_only_no_pickle() -> None:
    conf = build_app(_settings()).conf
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]


def test_late_acks_and_the_visibility_timeout_come_from_settings() -> None:
    """What redelivery after a killed worker rests on; the kill itself is tested in
    tests/service/test_recovery.py (a worker SIGKILLed with 16 jobs in flight)."""
    conf = build_app(_settings(visibility_timeout_s=123)).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    # Celery reads the timeout in three places and uses the shortest: all three agree.
    assert conf.broker_transport_options["visibility_timeout"] == 123
    assert conf.result_backend_transport_options["visibility_timeout"] == 123
    assert conf.visibility_timeout == 123
    # one sweep for overdue unacked jobs per redelivery_sweep_s (kombu: interval x throttle)
    assert conf.broker_transport_options["unacked_restore_interval"] == 10
    assert conf.broker_transport_options["unacked_restore_throttle"] == 1


def test_a_redelivered_job_that_already_succeeded_is_not_run_again() -> None:
    assert build_app(_settings()).conf.worker_deduplicate_successful_tasks is True


def test_limits_prefetch_and_expiry_come_from_settings() -> None:
    conf = build_app(
        _settings(
            prefetch_multiplier=2,
            worker_concurrency=7,
            soft_time_limit_s=10,
            time_limit_s=20,
            result_expires_s=30,
            queue_name="q1",
        )
    ).conf
    assert conf.worker_prefetch_multiplier == 2
    assert conf.worker_concurrency == 7
    assert conf.worker_pool == "threads"
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (10, 20)
    assert conf.result_expires == 30
    assert conf.task_default_queue == "q1"
    for name in TASK_NAMES:
        assert (
            build_app(_settings(queue_name="q1")).amqp.router.route({}, name)["queue"].name == "q1"
        )


def test_key_prefix_reaches_broker_and_result_keys() -> None:
    app = build_app(_settings(key_prefix="tenant-a:", broker_url="redis://127.0.0.1:6379/3"))
    assert app.conf.broker_transport_options["global_keyprefix"] == "tenant-a:"
    assert app.conf.result_backend_transport_options["global_keyprefix"] == "tenant-a:"
    assert app.backend.get_key_for_task("abc") == b"tenant-a:celery-task-meta-abc"


def test_no_prefix_means_no_prefix_option() -> None:
    config = celery_config(QueueSettings())
    assert "global_keyprefix" not in config["broker_transport_options"]
    assert "global_keyprefix" not in config["result_backend_transport_options"]


def test_result_backend_defaults_to_broker() -> None:
    url = "redis://10.0.0.5:6380/2"
    assert build_app(_settings(broker_url=url)).conf.result_backend == url
    other = "redis://10.0.0.6:6379/0"
    assert build_app(_settings(broker_url=url, result_backend=other)).conf.result_backend == other
