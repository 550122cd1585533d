"""One thread per pod, as the real kubelet's pod workers: set the sandbox up (netns, CNI ADD,
the pod's files and volumes), run the init containers one by one to completion, then the
containers; restart them by restartPolicy with CrashLoopBackOff; run their probes; report the
status; and on deletion stop them (SIGTERM, SIGKILL after the grace period) and tear it all down.
A failure of one pod is logged and reported on that pod; it never stops the kubelet.
"""
from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import logging
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import cniexec
from . import (
    backoff,
    dns,
    downward,
    env,
    hooks,
    images,
    model,
    probes,
    runtime,
    sandbox,
    status,
    volumefiles,
    volumes,
)
from .podspec import Container, ContainerRecord, Pod

if TYPE_CHECKING:
    from .kubelet import Kubelet

log = logging.getLogger("kubelet.pod")
SANDBOX_BACKOFF_MAX = 20.0
CONFIG_RETRY = 2.0              # a container whose env cannot be made is tried again after this
RESYNC = 1.0                     # how often a running pod looks at its containers
VOLUME_RESYNC = 60.0             # configMap, secret and token contents refreshed this often
TERMINAL_RESYNC = 10.0


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _terminated(raw: dict) -> status.Terminated | None:
    if not raw:
        return None
    return status.Terminated(int(raw.get("exitCode", 0)), raw.get("reason") or "", raw.get("startedAt") or "",
                             raw.get("finishedAt") or "", raw.get("message") or "",
                             (raw.get("containerID") or "").partition("://")[2])


class ContainerRun:
    """The kubelet's view of one (init) container across its restarts."""

    def __init__(self, spec: Container, init: bool, record: ContainerRecord | None, pod: Pod):
        self.spec = spec
        self.init = init
        self.proc: runtime.ContainerProcess | None = None
        self.restarts = record.restart_count if record else 0
        self.last = _terminated(record.last) if record else None
        self.terminated: status.Terminated | None = None
        self.state = "waiting"
        self.reason = "ContainerCreating" if init or not pod.init_containers else "PodInitializing"
        self.message = ""
        self.started_at = ""
        self.start_mono = 0.0
        self.finished_mono = 0.0
        self.backoff = backoff.Backoff()
        self.container_id = ""
        self.workload = False
        self.log_path: Path | None = None
        self.ready_seen = False          # the lab workload printed "ready" (its sockets are bound)
        self.env: dict[str, str] = {}
        self.config_error = ""           # why the last start could not even be tried
        self.terminating = False         # the pod is being deleted
        self.readiness = probes.ProbeState()
        self.liveness = probes.ProbeState()
        self.startup = probes.ProbeState()
        self.next_probe: dict[str, float] = {}

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def started(self) -> bool:
        return self.running and (self.spec.startup is None or self.startup.ok)

    @property
    def ready(self) -> bool:
        if self.terminating or not self.started or (self.workload and not self.ready_seen):
            return False
        return self.spec.readiness is None or self.readiness.ok

    def view(self) -> status.ContainerView:
        return status.ContainerView(
            name=self.spec.name, image=self.spec.image or "kubeweft/lab-workload", state=self.state,
            reason=self.reason, message=self.message, started_at=self.started_at, terminated=self.terminated,
            last=self.last, restart_count=self.restarts, ready=self.ready and not self.init,
            started=self.started if not self.init else False, container_id=self.container_id)

    def record(self) -> dict:
        out = {"restarts": self.restarts, "startedAt": self.started_at, "id": self.container_id,
               "log": str(self.log_path or ""), "workload": self.workload}
        if self.proc is not None:
            out.update(self.proc.record())
        if self.terminated is not None:
            out["terminated"] = self.terminated.render()
        return out


class PodWorker(threading.Thread):
    def __init__(self, kubelet: Kubelet, pod: Pod, adopt: dict | None = None, removed: bool = False):
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
        self.pod_dir = kubelet.paths.pod_dir(pod.uid)
        self.log_dir = kubelet.paths.log_dir(pod.namespace, pod.name, pod.uid)
        self.ip: str | None = None           # the primary family's address (status.podIP)
        self.ips: tuple[str, ...] = ()       # one per family, primary first (status.podIPs)
        self.attached = False                # CNI ADD done (and not yet DEL)
        self.sandbox_ready = False
        self.sandbox_error = ""
        self.started = pod.start_time or now()
        self.conds = {c.type: c for c in pod.conditions}
        self.inits = [ContainerRun(c, True, _find(pod.init_statuses, c.name), pod) for c in pod.init_containers]
        self.mains = [ContainerRun(c, False, _find(pod.statuses, c.name), pod) for c in pod.containers]
        self.terminal = False                # Succeeded or Failed: the sandbox is gone, the pod stays
        self.next_volumes = 0.0
        self.fetched: volumes.Fetched | None = None
        self.last_status: dict | None = None
        self.torn_down = False               # done: the kubelet never starts this uid again

    # --- called from the watch thread ------------------------------------------------------------
    def update(self, pod: Pod) -> None:
        self.pod = pod
        self.wake.set()

    def remove(self) -> None:
        self.removed = True
        self.wake.set()

    @property
    def runs(self) -> list[ContainerRun]:
        return self.inits + self.mains

    def run_for(self, name: str) -> ContainerRun | None:
        return next((r for r in self.runs if r.spec.name == name), None)

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("%s: pod worker failed", self.pod.key)
        finally:
            self.kl.worker_done(self)

    def _loop(self) -> None:
        if self.adopt is not None:
            self._adopt(self.adopt)
        delay = 1.0
        while True:
            pod = self.pod
            if self.removed or pod.deleting:
                self._terminate(api_delete=not self.removed)
                return
            if self.terminal:
                self._send_status()
                self._sleep(TERMINAL_RESYNC)
                continue
            if not self.sandbox_ready:
                try:
                    self._setup_sandbox()
                    delay = 1.0
                except Exception as e:  # noqa: BLE001 (reported on the pod, retried with backoff)
                    self._sandbox_failed(e)
                    self._sleep_through_updates(delay)
                    delay = min(delay * 2, SANDBOX_BACKOFF_MAX)
                    continue
            if time.monotonic() >= self.next_volumes:
                self._sync_volumes(quiet=True)
            self._reap()
            if self._inits_done():
                for r in self.mains:
                    self._step(r)
            else:
                self._step_init()
            wake = self._probe()
            self._check_terminal()
            self._send_status()
            self._sleep(min(wake, self._next_start()))

    def _sleep(self, seconds: float) -> None:
        self.wake.wait(max(0.05, seconds))
        self.wake.clear()

    def _sleep_through_updates(self, seconds: float) -> None:
        """Sleep through updates (our own status patches come back as updates), not through a deletion."""
        deadline = time.monotonic() + seconds
        while not (self.removed or self.pod.deleting):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._sleep(left)

    def _next_start(self) -> float:
        t = time.monotonic()
        waits = [r.finished_mono for r in self.runs if r.proc is None and r.finished_mono > t]
        return min([RESYNC] + [w - t for w in waits])

    # --- the sandbox -----------------------------------------------------------------------------------
    def _setup_sandbox(self) -> None:
        pod = self.pod
        t0 = time.monotonic()
        if pod.host_network:
            self.ips = self.kl.node_ips
            self.ip = self.ips[0]
        else:
            self.kl.record(self.uid, self._record())                # before any netns exists
            sandbox.ensure_netns(self.netns_name)
            if not self.attached:
                rt = self._runtime_conf()
                self.attached = True                               # a failed ADD still needs its DEL
                result = self.kl.network.add(rt)
                families = self.kl.cfg.families
                self.ips = model.pick_pod_ips(result, families)
                if not self.ips or ipaddress.ip_address(self.ips[0]).version != families[0]:
                    raise cniexec.CniError(cniexec.RUNTIME_ERROR,
                                           f"CNI result has no IPv{families[0]} address")
                self.ip = self.ips[0]
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        self._write_etc_files()
        self._sync_volumes(quiet=False)
        self.sandbox_ready = True
        self.sandbox_error = ""
        self.kl.record(self.uid, self._record())
        log.info("%s: sandbox ready, ip %s (%.0f ms)", pod.key, self.ip, (time.monotonic() - t0) * 1000)

    def _sandbox_failed(self, e: Exception) -> None:
        log.warning("%s: sandbox: %s", self.pod.key, e)
        if self.attached and not self.sandbox_ready and not isinstance(e, volumes.VolumeError):
            # libcni leaves a failed ADD's half-made attachment to the runtime: DEL it before retrying
            try:
                self.kl.network.delete(self._runtime_conf())
                self.attached = False
            except Exception as de:  # noqa: BLE001
                log.warning("%s: DEL after a failed ADD: %s", self.pod.key, de)
        self.sandbox_error = str(e)
        self._send_status()

    def _runtime_conf(self) -> cniexec.RuntimeConf:
        return self.kl.network.runtime_conf(self.sandbox_id, self.netns_name, self.pod.namespace,
                                            self.pod.name, model.render_port_mappings(self.pod))

    def _write_etc_files(self) -> None:
        pod, kl = self.pod, self.kl
        files = {"hosts": dns.render_hosts(pod, self.ip or "", kl.node, kl.node_hosts),
                 "resolv.conf": dns.render_resolv_conf(pod, kl.cluster_dns, kl.node_resolv),
                 "hostname": dns.pod_hostname(pod, kl.node) + "\n"}
        for name, text in files.items():
            path = self.pod_dir / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)

    def _facts(self) -> downward.PodFacts:
        return downward.PodFacts(self.pod, self.ip or "", self.kl.node_ips[0], self.ips, self.kl.node_ips)

    def _sync_volumes(self, quiet: bool) -> None:
        """Check hostPaths, make emptyDirs, write the file volumes (fetching what they show)."""
        pod = self.pod
        self.next_volumes = time.monotonic() + VOLUME_RESYNC
        try:
            for c in pod.init_containers + pod.containers:
                for check in volumes.plan_mounts(c, pod.volumes, self.kl.paths, self.pod_dir)[1]:
                    volumefiles.check_host_path(check)
            fetched = self.kl.fetch(pod, volumes.referenced_objects(pod.volumes), volumes.token_requests(pod.volumes),
                                    self.fetched)
            for vol in pod.volumes:
                if vol.kind == "emptyDir":
                    volumes.volume_dir(self.pod_dir, vol).mkdir(parents=True, exist_ok=True)
                elif vol.kind in volumes.FILE_KINDS:
                    files = volumes.render_files(vol, self._facts(), pod.containers[0], fetched)
                    volumefiles.write_payload(volumes.volume_dir(self.pod_dir, vol), files)
            self.fetched = fetched
        except Exception as e:
            if not quiet:
                raise volumes.VolumeError(f"MountVolume.SetUp failed: {e}") from e
            log.warning("%s: volume refresh: %s", pod.key, e)

    # --- containers ------------------------------------------------------------------------------------
    def _inits_done(self) -> bool:
        return all(r.state == "terminated" and r.terminated and r.terminated.exit_code == 0 for r in self.inits)

    def _step_init(self) -> None:
        for r in self.inits:
            if r.state == "terminated" and r.terminated and r.terminated.exit_code == 0:
                continue
            self._step(r)
            return

    def _step(self, r: ContainerRun) -> None:
        """Start `r` if it should run now (first start, or a restart its back-off allows)."""
        if r.proc is not None or self.terminal:
            return
        if r.state == "terminated" and not self._should_restart(r):
            return
        if r.finished_mono and time.monotonic() < r.finished_mono:
            return
        if self.kl.held(self.pod.namespace, r.spec.name):
            return
        self._start(r)

    def _should_restart(self, r: ContainerRun) -> bool:
        policy = self.pod.restart_policy
        if r.init:
            return policy != "Never" and not (r.terminated and r.terminated.exit_code == 0)
        if policy == "Always":
            return True
        return policy == "OnFailure" and r.terminated is not None and r.terminated.exit_code != 0

    def _start(self, r: ContainerRun) -> None:
        pod, kl, c = self.pod, self.kl, self.spec_of(r)
        try:
            sources = kl.fetch_objects(pod.namespace, env.referenced_sources(c))
            values = env.render_env(c, self._facts(), kl.service_env(pod), sources)
        except env.EnvError as e:
            # CreateContainerConfigError: tried again shortly, the container does not count as started
            r.config_error = str(e)
            r.finished_mono = time.monotonic() + CONFIG_RETRY
            return
        r.config_error = ""
        if r.state == "terminated":
            r.backoff = backoff.after_restart(r.backoff, time.monotonic(), kl.backoff_base, backoff.CAP)
            r.restarts += 1
            r.last = r.terminated
        process = images.plan_process(pod, c, tuple(env.expand_command(c.command, values)),
                                      tuple(env.expand_command(c.args, values)), kl.venv_bin, kl.python,
                                      kl.cfg.name, kl.kubeweft_files)
        run_env = {"PATH": process.path, "HOSTNAME": dns.pod_hostname(pod, kl.node), "HOME": "/root"}
        run_env.update(values)
        if c.tty:
            run_env.setdefault("TERM", "xterm")
        run_env.update(kl.lab_env)
        mounts, _ = volumes.plan_mounts(c, pod.volumes, kl.paths, self.pod_dir)
        mounts = volumes.with_image_files(mounts, process.files)
        cdir = self.pod_dir / "containers" / c.name
        spec = {"netns": str(sandbox.netns.path(self.netns_name)) if self.netns_name else None,
                "hostname": dns.pod_hostname(pod, kl.node), "root": str(cdir / "root"), "top": kl.rootfs_top,
                "mounts": [m.spec() for m in mounts], "workdir": c.working_dir or "/",
                "argv": list(process.argv), "env": run_env}
        r.log_path = self.log_dir / c.name / f"{r.restarts}.log"
        _rotate_logs(r.log_path)
        r.container_id = model.container_id(f"{self.uid}/{c.name}/{r.restarts}")
        r.workload, r.ready_seen, r.env = process.workload, False, run_env
        r.readiness = r.liveness = r.startup = probes.ProbeState()
        t = time.monotonic()
        r.next_probe = {k: t + (p.initial_delay if p else 0) for k, p in
                        (("startup", c.startup), ("liveness", c.liveness), ("readiness", c.readiness))}
        started = now()
        try:
            r.proc = runtime.start(spec, cdir / "spec.json", r.log_path, run_env)
        except runtime.StartError as e:
            log.warning("%s: container %s: %s", pod.key, c.name, e)
            r.proc = None
            r.state, r.started_at = "terminated", ""
            r.terminated = status.Terminated(runtime.START_ERROR, "StartError", started, now(), str(e),
                                             container_id=r.container_id)
            r.finished_mono = backoff.restart_at(r.backoff, time.monotonic(), backoff.CAP)
            return
        r.started_at = started
        self.kl.record(self.uid, self._record())
        if c.post_start is not None and not self._post_start(r, c):
            return
        r.state, r.reason, r.message, r.terminated = "running", "", "", None
        r.start_mono = time.monotonic()
        self.kl.record(self.uid, self._record())
        log.info("%s: container %s started (pid %s): %s", pod.key, c.name, r.proc.pid,
                 images.render_command(process)[:200])

    def _post_start(self, r: ContainerRun, c: Container) -> bool:
        """Run the postStart hook: the container is not Running until it returns; if it fails,
        the container is killed and restarted by the pod's restartPolicy."""
        ok, why = hooks.run(c.post_start, self.ip or "", r.proc.pid, r.env, hooks.POST_START_TIMEOUT)
        if ok:
            return True
        log.warning("%s: postStart hook of %s failed: %s", self.pod.key, c.name, why)
        r.proc.stop(float(self.pod.grace_seconds))
        self._finished(r)
        r.terminated = dataclasses.replace(r.terminated, message=f"PostStartHookError: {why}"[:400])
        return False

    def spec_of(self, r: ContainerRun) -> Container:
        """The container's current spec (images may change in a pod update)."""
        return self.pod.container(r.spec.name) or r.spec

    def _reap(self) -> None:
        """Notice containers that ended: terminated state, and when they may start again."""
        for r in self.runs:
            if r.proc is None:
                continue
            if r.workload and not r.ready_seen and r.log_path is not None:
                r.ready_seen = sandbox.saw_ready(r.log_path, 0)
            if r.proc.alive():
                continue
            self._finished(r)

    def _finished(self, r: ContainerRun) -> None:
        proc = r.proc
        r.proc = None
        code = proc.exit_code() if proc else None
        if code is None:
            term = status.Terminated(137, "ContainerStatusUnknown", r.started_at, now(),
                                     "The container could not be located when the pod was terminated",
                                     container_id=r.container_id)
        else:
            term = status.Terminated(code, status.terminated_reason(code), r.started_at, now(),
                                     container_id=r.container_id)
        r.state, r.terminated = "terminated", term
        r.finished_mono = backoff.restart_at(r.backoff, time.monotonic(), backoff.CAP)
        log.info("%s: container %s exited with %s (%s)", self.pod.key, r.spec.name, term.exit_code, term.reason)
        self.kl.record(self.uid, self._record())

    # --- probes ---------------------------------------------------------------------------------------
    def _probe(self) -> float:
        """Run the probes that are due; returns how long until the next one."""
        t = time.monotonic()
        wake = RESYNC
        for r in self.mains:
            if not r.running or r.proc is None:
                continue
            c = self.spec_of(r)
            for kind, probe in (("startup", c.startup), ("liveness", c.liveness), ("readiness", c.readiness)):
                if probe is None or (kind != "startup" and c.startup is not None and not r.startup.ok):
                    continue
                if kind == "startup" and r.startup.ok:
                    continue
                due = r.next_probe.get(kind, t)
                if t < due:
                    wake = min(wake, due - t)
                    continue
                ok, why = probes.run(probe, self.ip or "", r.proc.pid, r.env)
                r.next_probe[kind] = time.monotonic() + probe.period
                wake = min(wake, probe.period)
                state = probes.record(getattr(r, kind), probe, ok)
                setattr(r, kind, state)
                if not ok:
                    log.info("%s: %s probe of %s failed: %s", self.pod.key, kind, c.name, why)
                if kind != "readiness" and probes.failed(state, probe):
                    grace = probe.grace if probe.grace is not None else self.pod.grace_seconds
                    log.warning("%s: container %s failed %s probe, will be restarted", self.pod.key, c.name, kind)
                    term_grace = self._pre_stop(float(grace), only=r)
                    r.proc.stop(term_grace)
                    self._finished(r)
                    break
        return wake

    # --- the pod's phase and status -------------------------------------------------------------------
    def _views(self) -> tuple[list[status.ContainerView], list[status.ContainerView]]:
        inits, mains = [], []
        t = time.monotonic()
        for r in self.runs:
            v = r.view()
            if r.config_error:
                v = status.ContainerView(v.name, v.image, "waiting", "CreateContainerConfigError", r.config_error,
                                         last=r.last if r.state != "terminated" else r.terminated,
                                         restart_count=v.restart_count)
            elif r.state == "terminated" and not self.terminal and self._should_restart(r):
                v = _crash_loop(v, r, self.pod, max(0.0, r.finished_mono - t))
            elif r.state == "waiting" and not self.sandbox_ready and self.sandbox_error:
                v = status.ContainerView(v.name, v.image, "waiting", v.reason, "", last=v.last,
                                         restart_count=v.restart_count)
            (inits if r.init else mains).append(v)
        return inits, mains

    def _check_terminal(self) -> None:
        inits, mains = self._views()
        phase = status.plan_phase(self.pod.restart_policy, inits, mains)
        if phase in ("Succeeded", "Failed") and not self.terminal:
            log.info("%s: %s", self.pod.key, phase)
            for r in self.runs:
                if r.proc is not None:
                    r.proc.stop(float(self.pod.grace_seconds))
                    self._finished(r)
            self.terminal = True
            self._teardown_network()

    def _send_status(self) -> None:
        pod, t = self.pod, now()
        inits, mains = self._views()
        phase = status.plan_phase(pod.restart_policy, inits, mains)
        if self.terminal and phase not in ("Succeeded", "Failed"):
            phase = "Failed"
        conds = status.plan_conditions(pod, phase, self.sandbox_ready or self.terminal, inits, mains, self.conds, t)
        if self.sandbox_error and not self.sandbox_ready:
            conds = [c if c.type != "Ready" else status.next_condition(self.conds.get("Ready"), "Ready", False, t,
                                                                       "ContainersNotReady", self.sandbox_error)
                     for c in conds]
        view = status.PodView(phase, self.kl.node_ips[0], self.ip, self.started, tuple(conds),
                              pod_ips=self.ips, host_ips=self.kl.node_ips)
        doc = status.render_pod_status(view, inits, mains)
        if doc == self.last_status:
            return
        if self.kl.patch_pod_status(pod, doc):
            self.conds = {c.type: c for c in conds}
            self.last_status = doc

    # --- adoption after a kubelet restart -------------------------------------------------------------
    def _adopt(self, entry: dict) -> None:
        """A sandbox from before our restart: keep it and its live containers if its netns is there."""
        if self.netns_name is not None and not sandbox.netns.exists(self.netns_name):
            log.info("%s: sandbox from before the restart is gone; cleaning it", self.pod.key)
            self.attached = True
            self._teardown_sandbox(grace=0.0, entry=entry)
            # the node rebooted under it: its containers ended unseen, and their restart in the
            # new sandbox counts (restartCount + 1, lastState terminated), as after a reboot
            for r in self.mains:
                rec = (entry.get("containers") or {}).get(r.spec.name) or {}
                if rec.get("pid") and "terminated" not in rec:
                    r.container_id, r.started_at = rec.get("id", ""), rec.get("startedAt", "")
                    self._finished(r)
            return
        self.ip = entry.get("ip")
        self.ips = tuple(entry.get("ips") or ([self.ip] if self.ip else []))
        self.attached = self.netns_name is not None
        self.sandbox_ready = bool(entry.get("ready"))
        self.terminal = bool(entry.get("terminal"))
        ready = {s.name: s.ready for s in self.pod.statuses}
        for r in self.runs:
            rec = (entry.get("containers") or {}).get(r.spec.name) or {}
            r.container_id, r.workload = rec.get("id", ""), bool(rec.get("workload"))
            r.log_path = Path(rec["log"]) if rec.get("log") else None
            if "terminated" in rec:
                r.state, r.terminated = "terminated", _terminated(rec["terminated"])
            proc = runtime.adopt(rec)
            if proc is None:
                if rec.get("pid") and r.state != "terminated":
                    # it ended while we were down: its exit code is lost (ContainerStatusUnknown)
                    r.started_at = rec.get("startedAt", "")
                    self._finished(r)
                continue
            r.proc, r.state, r.started_at = proc, "running", rec.get("startedAt") or now()
            r.start_mono, r.ready_seen = time.monotonic(), True
            r.restarts = max(r.restarts, int(rec.get("restarts", 0)))
            r.readiness = r.startup = probes.ProbeState(ok=bool(ready.get(r.spec.name)))
            log.info("%s: adopted container %s (pid %s)", self.pod.key, r.spec.name, proc.pid)

    def _record(self) -> dict:
        pod = self.pod
        first = next((r.proc.pid for r in self.mains if r.proc is not None), None)
        return {"namespace": pod.namespace, "name": pod.name,
                "netns": self.netns_name or self.kl.cfg.node_netns(self.kl.node), "ip": self.ip,
                "ips": list(self.ips),
                "containerID": self.sandbox_id, "pid": first, "hostNetwork": pod.host_network,
                "pids": [r.proc.pid for r in self.runs if r.proc is not None],
                "ready": self.sandbox_ready, "terminal": self.terminal,
                "containers": {r.spec.name: r.record() for r in self.runs}}

    # --- teardown ----------------------------------------------------------------------------------
    def _terminate(self, api_delete: bool) -> None:
        pod = self.pod
        log.info("%s: %s", pod.key, "terminating" if api_delete else "gone from the API: tearing down")
        grace = float(pod.grace_seconds) if api_delete else min(float(pod.grace_seconds), 2.0)
        if api_delete and any(r.proc for r in self.runs):
            for r in self.mains:
                r.terminating = True           # unready at once: Services stop sending new traffic
            self._send_status()
        self._teardown_sandbox(grace)
        self.torn_down = True
        if api_delete:
            self.kl.delete_pod(pod)

    def _stop_containers(self, grace: float, entry: dict | None = None) -> None:
        """SIGTERM every container at once, SIGKILL what is left after `grace`."""
        procs = [r.proc for r in self.runs if r.proc is not None]
        for rec in ((entry or {}).get("containers") or {}).values():
            p = runtime.adopt(rec)
            if p is not None:
                procs.append(p)
        term_grace = self._pre_stop(grace)
        self.kl.end_execs(self.uid)
        for p in procs:
            p.send(signal.SIGTERM)
        deadline = time.monotonic() + term_grace
        for p in procs:
            if not p.wait(max(0.0, deadline - time.monotonic())):
                log.info("%s: container %s did not end within %.0fs: SIGKILL", self.pod.key, p.pid, term_grace)
                p.send(signal.SIGKILL)
                p.wait(5.0)
        for r in self.runs:
            if r.proc is not None:
                self._finished(r)

    def _pre_stop(self, grace: float, only: ContainerRun | None = None) -> float:
        """Run the running containers' (or `only`'s) preStop hooks, within `grace`; returns the
        SIGTERM-to-SIGKILL time left."""
        jobs = [(r.spec.name, self.spec_of(r).pre_stop, r.proc.pid, r.env) for r in ([only] if only else self.mains)
                if r.proc is not None and r.proc.alive() and self.spec_of(r).pre_stop is not None]
        if not jobs or grace <= 0:
            return grace
        results = hooks.run_all(jobs, self.ip or "", hooks.hook_timeout(grace))
        for name, (ok, why, _) in results.items():
            if not ok:
                log.warning("%s: preStop hook of %s failed: %s", self.pod.key, name, why)
        return hooks.plan_term_grace(grace, max(took for _, _, took in results.values()))

    def _teardown_network(self) -> None:
        if self.netns_name is None or not (self.attached or sandbox.netns.exists(self.netns_name)):
            return
        for attempt in range(3):
            try:
                self.kl.network.delete(self._runtime_conf())
                break
            except Exception as e:  # noqa: BLE001 (DEL is best effort; the netns goes anyway)
                log.warning("%s: CNI DEL (attempt %d): %s", self.pod.key, attempt + 1, e)
                time.sleep(0.5)
        self.attached = False
        sandbox.delete_netns(self.netns_name)
        self.kl.record(self.uid, self._record())

    def _teardown_sandbox(self, grace: float, entry: dict | None = None) -> None:
        self._stop_containers(grace, entry)
        self._teardown_network()
        shutil.rmtree(self.pod_dir, ignore_errors=True)
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.kl.forget(self.uid)
        log.info("%s: sandbox removed", self.pod.key)


def _find(records: tuple[ContainerRecord, ...], name: str) -> ContainerRecord | None:
    return next((r for r in records if r.name == name), None)


def _crash_loop(v: status.ContainerView, r: ContainerRun, pod: Pod, left: float) -> status.ContainerView:
    """A terminated container that will restart: waiting, in CrashLoopBackOff while backing off."""
    if left > 0:
        reason = "CrashLoopBackOff"
        message = (f"back-off {backoff.go_duration(r.backoff.delay or left)} restarting failed "
                   f"container={r.spec.name} pod={pod.name}_{pod.namespace}({pod.uid})")
    else:
        reason, message = "ContainerCreating", ""
    return status.ContainerView(v.name, v.image, "waiting", reason, message, last=r.terminated,
                                restart_count=v.restart_count, container_id=v.container_id)


def _rotate_logs(current: Path) -> None:
    """Keep the log of the previous instance (kubectl logs --previous), drop older ones."""
    try:
        n = int(current.stem)
    except ValueError:
        return
    for old in current.parent.glob("*.log"):
        try:
            if int(old.stem) < n - 1:
                old.unlink()
        except (ValueError, OSError):
            pass
