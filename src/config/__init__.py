"""Settings for every part of structsum, in one place (env prefix ``STRUCTSUM_``)."""

from structsum.config.settings import (
    BudgetSettings,
    CacheSettings,
    ConversationSettings,
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
    "CacheSettings",
    "ConversationSettings",
    "EngineSettings",
    "GroundingSettings",
    "QueueSettings",
    "RequestLimits",
    "SamplingSettings",
    "Settings",
    "TaskSampling",
    "get_settings",
]
