"""Long work behind the UI: the training queue and the service that runs it.

The UI only talks to a `TrainService` (service.py). `LocalTrainService` runs the queue
in a background thread (the standalone `python -m lib_trainer ui`); a WebUI host can
provide another implementation that runs the same queue items through the WebUI's own
job queue, without any change to the UI.
"""
from .queue import QueueItem, TrainQueue
from .service import LocalTrainService, ServiceSnapshot, TrainService
from .state import RunState

__all__ = ["QueueItem", "TrainQueue", "TrainService", "LocalTrainService", "ServiceSnapshot", "RunState"]
