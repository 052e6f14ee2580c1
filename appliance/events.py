"""In-process publish/subscribe for live updates (new reads, new alerts, status changes).

The pipeline publishes; each server-sent-events connection of the web UI subscribes with a small
queue of its own. A slow subscriber loses its oldest events instead of slowing the pipeline.
"""

from __future__ import annotations

import itertools
import queue
import threading


class EventBus:
    def __init__(self, queue_size: int = 100):
        self._subscribers: set[queue.Queue] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.queue_size = queue_size

    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        with self._lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            self._subscribers.discard(q)

    def publish(self, kind: str, data: dict) -> None:
        event = {"id": next(self._ids), "type": kind, "data": data}
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            while True:
                try:
                    q.put_nowait(event)
                    break
                except queue.Full:
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)
