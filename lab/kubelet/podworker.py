"""One thread per pod, as the real kubelet's pod workers: set the sandbox up (netns, CNI ADD,
workload), report status, probe readiness, restart a dead workload, and tear it all down on
deletion. A failure of one pod is logged and reported on that pod; it never stops the kubelet.
"""
from __future__ import annotations

import datetime
import http.client
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from .. import cniexec
from . import model, sandbox

if TYPE_CHECKING:
    from .kubelet import Kubelet

log = logging.getLogger("kubelet.pod")
MAX_BACKOFF = 20.0
RESYNC = 1.0                     # how often a running pod checks its workload
STABLE_RUN = 60.0                # a workload that ran this long restarts without delay growth


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodWorker(threading.Thread):
    def __init__(self, kubelet: Kubelet, pod: model.Pod, adopt: dict | None = None,
                 removed: bool = False):
        super().__init__(name=f"pod-{pod.namespace}/{pod.name}", daemon=True)
        self.kl = kubelet
        self.pod = pod
        self.uid = pod.uid
        self.adopt = adopt
        self.removed = removed               # gone from the API: tear down, no final DELETE
        self.wake = threading.Event()
        cfg = kubelet.cfg
        self.netns_name = None if pod.host_network else cfg.pod_netns(pod.namespace, pod.name, pod.uid)
        self.sandbox_id = model.container_id(pod.uid)
        self.ip: str | None = None
        self.workload: sandbox.Workload | None = None
        self.restarts = 0
        self.attached = False                # CNI ADD done (and not yet DEL)
        self.started = pod.start_time or now()
        self.running_since: str | None = None
        self.running_mono = 0.0              # monotonic start of the current workload
        self.conds = {c.type: c for c in pod.conditions}
        self.ready = False
        self.error = ""                      # why the last start failed
        self.probe_ok = self.probe_fail = 0
        self.next_probe = 0.0
        self.dirty = True                    # the status must be (re)sent
        self.torn_down = False               # done: the kubelet never starts this uid again

    # --- called from the watch thread ------------------------------------------------------------
    def update(self, pod: model.Pod) -> None:
        self.pod = pod
        self.wake.set()

    def remove(self) -> None:
        self.removed = True
        self.wake.set()

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("%s: pod worker failed", self.pod.key)
            try:
                self._report_failure("KubeletError", "pod worker failed; see the kubelet log")
            except Exception:
                log.exception("%s: reporting the failure failed too", self.pod.key)
        finally:
            self.kl.worker_done(self)

    def _loop(self) -> None:
        if self.adopt is not None:
            self._adopt(self.adopt)
        backoff = crash_backoff = 1.0
        while True:
            pod = self.pod
            if self.removed or pod.deleting:
                self._terminate(api_delete=not self.removed)
                return
            if self.workload is None:
                try:
                    self._start()
                    backoff = 1.0
                except Exception as e:  # noqa: BLE001 (reported on the pod, retried with backoff)
                    self._start_failed(e)
                    self._backoff(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
            elif not self.workload.alive():
                # CrashLoopBackOff: the delay doubles unless the workload had run a good while
                if time.monotonic() - self.running_mono > STABLE_RUN:
                    crash_backoff = 1.0
                log.warning("%s: workload %s exited; restarting in %.0fs", pod.key, self.workload.pid,
                            crash_backoff)
                self.workload = None
                self.running_since = None
                self.restarts += 1
                self._set_ready(False)
                self._send_status()
                self._backoff(crash_backoff)
                crash_backoff = min(crash_backoff * 2, MAX_BACKOFF)
                continue
            wait = self._probe_if_due()
            if self.dirty and not self._send_status():
                wait = min(wait, RESYNC)
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        self.wake.wait(max(0.0, seconds))
        self.wake.clear()

    def _backoff(self, seconds: float) -> None:
        """Sleep through updates (our own status patches come back as updates), but not
        through a deletion."""
        deadline = time.monotonic() + seconds
        while not (self.removed or self.pod.deleting):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._sleep(left)

    # --- start -----------------------------------------------------------------------------------
    def _adopt(self, entry: dict) -> None:
        """A sandbox from before our restart: keep it if its workload lives, else clean it."""
        pid = entry.get("pid")
        if sandbox.pid_runs_workload(pid, self.pod.key) and (self.netns_name is None or
                                                       sandbox.netns.exists(self.netns_name)):
            self.workload = sandbox.Workload(int(pid), None, self.pod.key)
            self.ip = entry.get("ip")
            self.attached = self.netns_name is not None
            ready = self.conds.get("Ready")
            self.running_since = self.started
            self.running_mono = time.monotonic()
            self.ready = ready.status if (ready and self.pod.probe) else self.pod.probe is None
            self.probe_ok = 1 if self.ready else 0
            log.info("%s: adopted workload %s (ip %s)", self.pod.key, pid, self.ip)
            return
        log.info("%s: sandbox from before the restart is dead; cleaning it", self.pod.key)
        self.attached = self.netns_name is not None
        self._teardown_sandbox(grace=0.0)

    def _start(self) -> None:
        pod = self.pod
        cfg = self.kl.cfg
        t0 = time.monotonic()
        if pod.host_network:
            self.ip = self.kl.node_ip
        else:
            self.kl.record(self.uid, self._record(pid=None))       # before any netns exists
            sandbox.ensure_netns(self.netns_name)
            if not self.attached:
                rt = self._runtime_conf()
                self.attached = True                               # a failed ADD still needs its DEL
                result = self.kl.network.add(rt)
                self.ip = model.pick_pod_ip(result)
                if not self.ip:
                    raise cniexec.CniError(cniexec.RUNTIME_ERROR, "CNI result has no IPv4 address")
        log_path = cfg.log_dir / f"pod-{pod.namespace}_{pod.name}_{pod.uid[:8]}.log"
        self.workload = sandbox.start_workload(cfg, pod.key, model.render_ports_arg(pod), self.netns_name,
                                               log_path, env=dict(pod.env))
        self.kl.record(self.uid, self._record(pid=self.workload.pid))
        self.running_since = now()
        self.running_mono = time.monotonic()
        self.error = ""
        self.probe_ok = self.probe_fail = 0
        self.next_probe = time.monotonic() + (pod.probe.initial_delay if pod.probe else 0)
        self._set_ready(pod.probe is None)
        log.info("%s: running, ip %s, pid %s (%.0f ms)", pod.key, self.ip, self.workload.pid,
                 (time.monotonic() - t0) * 1000)

    def _start_failed(self, e: Exception) -> None:
        log.warning("%s: start failed: %s", self.pod.key, e)
        if self.attached and not self.workload:
            # libcni leaves a failed ADD's half-made attachment to the runtime: DEL it before retrying
            try:
                self.kl.network.delete(self._runtime_conf())
                self.attached = False
            except Exception as de:  # noqa: BLE001
                log.warning("%s: DEL after a failed ADD: %s", self.pod.key, de)
        reason = "FailedCreatePodSandBox" if isinstance(e, cniexec.CniError) else "StartError"
        self._report_failure(reason, str(e))

    def _report_failure(self, reason: str, message: str) -> None:
        self.error = message
        self._set_ready(False, reason, message)
        self.dirty = True
        self._send_status()

    def _runtime_conf(self) -> cniexec.RuntimeConf:
        return self.kl.network.runtime_conf(self.sandbox_id, self.netns_name, self.pod.namespace,
                                            self.pod.name, model.render_port_mappings(self.pod))

    def _record(self, pid: int | None) -> dict:
        pod = self.pod
        return {"namespace": pod.namespace, "name": pod.name,
                "netns": self.netns_name or self.kl.cfg.node_netns(self.kl.node), "ip": self.ip,
                "containerID": self.sandbox_id, "pid": pid, "hostNetwork": pod.host_network}

    # --- readiness ---------------------------------------------------------------------------------
    def _set_ready(self, ready: bool, reason: str = "", message: str = "") -> None:
        if not ready and not reason:
            reason = "ContainersNotReady"
            message = f"containers with unready status: [{','.join(self.pod.containers)}]"
        old = self.conds.get("Ready")
        new = model.next_condition(old, "Ready", ready, now(), reason, message)
        if new != old or ready != self.ready:
            self.conds["Ready"] = new
            self.ready = ready
            self.dirty = True

    def _probe_if_due(self) -> float:
        """Probe when due; returns how long to sleep."""
        probe = self.pod.probe
        if probe is None or self.ip is None:
            return RESYNC
        t = time.monotonic()
        if t < self.next_probe:
            return min(RESYNC, self.next_probe - t)
        ok = probe_once(probe, self.ip)
        self.next_probe = time.monotonic() + probe.period
        if ok:
            self.probe_ok, self.probe_fail = self.probe_ok + 1, 0
            if not self.ready and self.probe_ok >= probe.success_threshold:
                self._set_ready(True)
        else:
            self.probe_ok, self.probe_fail = 0, self.probe_fail + 1
            # a pod that has never been ready goes unready at once; a ready one after the threshold
            if self.ready and self.probe_fail >= probe.failure_threshold:
                self._set_ready(False, "", "")
        return min(RESYNC, probe.period)

    # --- status ------------------------------------------------------------------------------------
    def _send_status(self) -> bool:
        pod, t = self.pod, now()
        sched = self.conds.get("PodScheduled") or model.Condition("PodScheduled", True, self.started)
        init = model.next_condition(self.conds.get("Initialized"), "Initialized", True, t)
        self.conds["PodScheduled"], self.conds["Initialized"] = sched, init
        ready = self.conds.get("Ready") or model.next_condition(None, "Ready", False, t, "ContainersNotReady")
        phase = "Running" if self.running_since else "Pending"
        status = model.render_pod_status(pod, phase=phase, host_ip=self.kl.node_ip, pod_ip=self.ip,
                                         started=self.started, scheduled=sched, initialized=init,
                                         ready=ready, running_since=self.running_since,
                                         restart_count=self.restarts, sandbox_id=self.sandbox_id)
        ok = self.kl.patch_pod_status(pod, status)
        if ok:
            self.dirty = False
        return ok

    # --- teardown ----------------------------------------------------------------------------------
    def _terminate(self, api_delete: bool) -> None:
        pod = self.pod
        log.info("%s: %s", pod.key, "terminating" if api_delete else "gone from the API: tearing down")
        if api_delete and self.workload is not None:
            self._set_ready(False, "", "")
            self._send_status()
        grace = float(pod.grace_seconds) if api_delete else min(float(pod.grace_seconds), 2.0)
        self._teardown_sandbox(grace)
        self.torn_down = True
        if api_delete:
            self.kl.delete_pod(pod)

    def _teardown_sandbox(self, grace: float) -> None:
        pod = self.pod
        if self.workload is not None:
            self.workload.stop(grace)
            self.workload = None
        else:
            entry = self.kl.local.get(self.uid) or {}
            stray = sandbox.Workload(entry.get("pid") or 0, None, pod.key)
            if stray.alive():
                stray.stop(grace)
        if self.netns_name is not None:
            for attempt in range(3):
                try:
                    self.kl.network.delete(self._runtime_conf())
                    break
                except Exception as e:  # noqa: BLE001 (DEL is best effort; the netns goes anyway)
                    log.warning("%s: CNI DEL (attempt %d): %s", pod.key, attempt + 1, e)
                    time.sleep(0.5)
            self.attached = False
            sandbox.delete_netns(self.netns_name)
        self.running_since = None
        self.ip = None if self.netns_name else self.ip
        self.kl.forget(self.uid)
        log.info("%s: sandbox removed", pod.key)


def probe_once(probe: model.Probe, ip: str) -> bool:
    """One readiness probe from the node's netns (where the kubelet runs), bounded in time."""
    try:
        if probe.kind == "tcp":
            with socket.create_connection((ip, probe.port), timeout=probe.timeout):
                return True
        conn = http.client.HTTPConnection(ip, probe.port, timeout=probe.timeout)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "kube-probe/1.35"})
            return 200 <= conn.getresponse().status < 400
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False
