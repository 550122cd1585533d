"""One agent of many does a job: leader election on a coordination.k8s.io Lease, with the
kubernetes client's own elector (kubernetes.leaderelection) on the agent's API client.

The elector's loops never return while the process lives, so it runs on a daemon thread; `stop`
only stops claiming leadership here (is_leader goes False at once). The Lease then expires
after LEASE_DURATION and another agent takes it: what a leader does must be safe to repeat.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("kubeweft.leader")
# the elector logs every retry (each 2 s) at INFO; this module logs the transitions
logging.getLogger("leaderelection").setLevel(logging.WARNING)

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15, 10, 2      # seconds: client-go's defaults halved


class Leader:
    def __init__(self, api, namespace: str, name: str, identity: str, on_change=lambda leading: None):
        self.api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.on_change = on_change
        self._leading = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set() and not self._stopping.is_set()

    def start(self) -> Leader:
        from kubernetes import client
        from kubernetes.leaderelection import electionconfig, leaderelection
        from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

        lock = LeaseLock(self.name, self.namespace, self.identity)
        lock.api_instance = client.CoordinationV1Api(self.api)     # the agent's client, not the default one
        config = electionconfig.Config(lock, LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD,
                                       self._started, self._stopped)
        self._thread = threading.Thread(target=self._run, args=(leaderelection.LeaderElection(config),),
                                        name=f"leader {self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self, election) -> None:
        while not self._stopping.is_set():
            try:
                election.run()                  # returns when leadership is lost; campaign again
            except Exception:               # an API error must not end the campaign
                log.exception("leader election %s/%s", self.namespace, self.name)
            self._stopping.wait(RETRY_PERIOD)

    def _started(self) -> None:
        log.info("%s leads %s/%s", self.identity, self.namespace, self.name)
        self._leading.set()
        self.on_change(True)          # returns: the elector renews on its own thread meanwhile

    def _stopped(self) -> None:
        if self._leading.is_set():
            log.info("%s no longer leads %s/%s", self.identity, self.namespace, self.name)
        self._leading.clear()
        self.on_change(False)

    def stop(self) -> None:
        self._stopping.set()
        self._leading.clear()
