"""A pod's status as the kubelet reports it: container statuses, phase, conditions. Pure.

The pod worker describes each container with a ContainerView; `render_pod_status` makes the
status document (the kubelet's generateAPIPodStatus), `plan_phase` the phase (getPhase).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .podspec import Condition, Pod

RUNTIME_PREFIX = "lab://"


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str                  # Completed, Error, StartError, OOMKilled, ContainerStatusUnknown
    started_at: str = ""
    finished_at: str = ""
    message: str = ""
    container_id: str = ""

    def render(self) -> dict:
        # no "signal": the runtime (CRI) reports exit codes only, 128+N for a signal N
        out: dict = {"exitCode": self.exit_code, "reason": self.reason}
        if self.message:
            out["message"] = self.message
        out["startedAt"] = self.started_at or None
        out["finishedAt"] = self.finished_at or None
        if self.container_id:
            out["containerID"] = RUNTIME_PREFIX + self.container_id
        return out


def terminated_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


@dataclass(frozen=True)
class ContainerView:
    name: str
    image: str
    state: str                   # waiting, running, terminated
    reason: str = ""             # waiting reason
    message: str = ""            # waiting message
    started_at: str = ""         # running since
    terminated: Terminated | None = None
    last: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""

    def render(self) -> dict:
        out: dict = {"name": self.name, "image": self.image, "imageID": "", "ready": self.ready,
                     "restartCount": self.restart_count, "started": self.started}
        if self.state == "running":
            out["state"] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated" and self.terminated is not None:
            out["state"] = {"terminated": self.terminated.render()}
        else:
            waiting: dict = {"reason": self.reason or "ContainerCreating"}
            if self.message:
                waiting["message"] = self.message
            out["state"] = {"waiting": waiting}
        out["lastState"] = {"terminated": self.last.render()} if self.last else {}
        if self.container_id:
            out["containerID"] = RUNTIME_PREFIX + self.container_id
        return out

    @property
    def succeeded(self) -> bool:
        return self.state == "terminated" and self.terminated is not None and self.terminated.exit_code == 0


def plan_phase(restart_policy: str, inits: list[ContainerView], mains: list[ContainerView]) -> str:
    """Pending, Running, Succeeded or Failed, as the kubelet's getPhase."""
    pending_init = failed_init = 0
    for c in inits:
        if c.succeeded:
            continue
        if c.state == "terminated" or (c.state == "waiting" and c.last is not None):
            failed_init += 1
        pending_init += 1
    if failed_init and restart_policy == "Never":
        return "Failed"
    if pending_init:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for c in mains:
        if c.state == "running":
            running += 1
        elif c.state == "terminated":
            stopped += 1
            succeeded += c.succeeded
        elif c.last is not None:             # waiting to restart (CrashLoopBackOff)
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if restart_policy == "Never":
        return "Failed"
    return "Running"


def render_condition(c: Condition) -> dict:
    out = {"type": c.type, "status": "True" if c.status else "False", "lastTransitionTime": c.since,
           "lastProbeTime": None}
    if c.reason:
        out["reason"] = c.reason
    if c.message:
        out["message"] = c.message
    return out


def next_condition(old: Condition | None, type_: str, status: bool, now: str, reason: str = "",
                   message: str = "") -> Condition:
    """The condition with lastTransitionTime kept unless its status flips."""
    since = old.since if old is not None and old.status == status else now
    return Condition(type_, status, since, reason, message)


@dataclass(frozen=True)
class PodView:
    """Everything the status says beyond the containers."""
    phase: str
    host_ip: str
    pod_ip: str | None
    start_time: str
    conditions: tuple[Condition, ...] = ()
    qos_class: str = ""
    extra: dict = field(default_factory=dict, compare=False)
    pod_ips: tuple[str, ...] = ()        # every address, primary family first (default: pod_ip)
    host_ips: tuple[str, ...] = ()       # the node's InternalIPs (default: host_ip)


def plan_conditions(pod: Pod, phase: str, sandbox_ready: bool, inits: list[ContainerView],
                    mains: list[ContainerView], old: dict[str, Condition], now: str) -> list[Condition]:
    """PodReadyToStartContainers, Initialized, Ready, ContainersReady and PodScheduled."""
    out = [next_condition(old.get("PodReadyToStartContainers"), "PodReadyToStartContainers", sandbox_ready, now)]
    pending = [c.name for c in inits if not c.succeeded]
    if pending and phase not in ("Succeeded", "Failed"):
        out.append(next_condition(old.get("Initialized"), "Initialized", False, now, "ContainersNotInitialized",
                                  f"containers with incomplete status: [{' '.join(pending)}]"))
    else:
        out.append(next_condition(old.get("Initialized"), "Initialized", True, now))
    unready = [c.name for c in mains if not c.ready]
    if phase in ("Succeeded", "Failed"):
        reason, message, ready = "PodCompleted", "", False
    elif unready:
        reason, message, ready = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]", False
    else:
        reason, message, ready = "", "", True
    out.append(next_condition(old.get("Ready"), "Ready", ready, now, reason, message))
    out.append(next_condition(old.get("ContainersReady"), "ContainersReady", ready, now, reason, message))
    out.append(old.get("PodScheduled") or Condition("PodScheduled", True, pod.start_time or now))
    return out


def render_pod_status(view: PodView, inits: list[ContainerView], mains: list[ContainerView]) -> dict:
    status: dict = {"phase": view.phase, "hostIP": view.host_ip,
                    "hostIPs": [{"ip": ip} for ip in view.host_ips or (view.host_ip,)],
                    "startTime": view.start_time, "conditions": [render_condition(c) for c in view.conditions],
                    "containerStatuses": [c.render() for c in mains]}
    if inits:
        status["initContainerStatuses"] = [c.render() for c in inits]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": ip} for ip in view.pod_ips or (view.pod_ip,)]
    if view.qos_class:
        status["qosClass"] = view.qos_class
    status.update(view.extra)
    return status
