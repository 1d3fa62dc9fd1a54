"""Schedules: the pure one-cycle policy as functions of the step (``one_cycle``), the torch ``LRScheduler`` over it
(``scheduler``), counting optimizer updates (``steps``) and the conventional baselines by name (``baselines``)."""

from superconv.schedule.one_cycle import PRESETS, OneCycleSchedule
from superconv.schedule.scheduler import OneCycleLR
from superconv.schedule.steps import UpdateCounter, total_steps

__all__ = ["PRESETS", "OneCycleLR", "OneCycleSchedule", "UpdateCounter", "total_steps"]
