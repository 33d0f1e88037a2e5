"""Settings for every part of structsum, in one place (env prefix ``STRUCTSUM_``)."""

from structsum.config.settings import (
    BudgetSettings,
    EngineSettings,
    QueueSettings,
    SamplingSettings,
    Settings,
    TaskSampling,
    get_settings,
)

__all__ = [
    "BudgetSettings",
    "EngineSettings",
    "QueueSettings",
    "SamplingSettings",
    "Settings",
    "TaskSampling",
    "get_settings",
]
