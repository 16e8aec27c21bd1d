"""The service: HTTP API, task queue, workers, metrics and settings.

The HTTP app (``trellis.agent.service._http``) and the metrics need the ``service`` extra
(FastAPI, Prometheus); this namespace imports neither.
"""

from trellis.agent.service._errors import (
    LeaseLostError,
    ServiceConfigError,
    TaskStateError,
    UnknownProfileError,
)
from trellis.agent.service._profiles import (
    Profile,
    available_profiles,
    env_profile,
    get_profile,
    register_profile,
    skills_profile,
)
from trellis.agent.service._queue import QueuedTask, QueueState, TaskQueue
from trellis.agent.service._settings import DemoProfileConfig, ServiceSettings

__all__ = [
    "DemoProfileConfig",
    "LeaseLostError",
    "Profile",
    "QueueState",
    "QueuedTask",
    "ServiceConfigError",
    "ServiceSettings",
    "TaskQueue",
    "TaskStateError",
    "UnknownProfileError",
    "available_profiles",
    "env_profile",
    "get_profile",
    "register_profile",
    "skills_profile",
]
