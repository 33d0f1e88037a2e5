"""Settings for every part of structsum, in one place (env prefix ``STRUCTSUM_``)."""

from structsum.config.settings import (
    BudgetSettings,
    EngineSettings,
    GroundingSettings,
    QueueSettings,
    RequestLimits,
    SamplingSettings,
    Settings,
    TaskSampling,
    get_settings,
)

__all__ = [
    "BudgetSettings",
    "EngineSettings",
    "GroundingSettings",
    "QueueSettings",
    "RequestLimits",
    "SamplingSettings",
    "Settings",
    "TaskSampling",
    "get_settings",
]
