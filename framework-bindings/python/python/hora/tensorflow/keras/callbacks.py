"""hora.tensorflow.keras.callbacks: the callbacks of ``hora.keras.callbacks``."""

from hora.keras.callbacks import (  # noqa: F401
    BestModelCheckpoint,
    BroadcastGlobalVariablesCallback,
    LearningRateScheduleCallback,
    LearningRateWarmupCallback,
    MetricAverageCallback,
)
