"""CNI ADD and DEL latency: kubeweft (shim -> gRPC -> agent) against the reference bridge +
host-local plugins, in one run, on one scratch node netns made and removed here (prefix h6a).
kubeweft runs three times: as the lab installs it (the venv script), as the `install-cni
--standalone` zipapp (run by /usr/bin/python3 -I), and as the DaemonSet installs it on nodes
without python3 (`install-cni --frozen`: the PyInstaller onedir build that kubeweft.cni.freeze
makes, built here from this venv, which takes ~30-60 s). The load average is printed too: on a
shared 2-core machine it moves every figure.

Each plugin is executed as a runtime does (env + stdin, a fresh process per call): N pods one
after the other, then rounds of 16 at once. Prints one JSON document: p50/p99 per case and
plugin, the ratio kubeweft/reference, and whether ADD p50 meets the 100 ms target.

    .venv/bin/python bench/cni_add_del.py [--pods 30] [--rounds 2] [--timeout 300]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeweft.cni import freeze
from kubeweft.lab import netns as lab_netns

KUBEWEFT = str(ROOT / ".venv" / "bin" / "kubeweft")
REFERENCE_BIN = "/usr/lib/cni"
TARGET_ADD_P50_MS = 100.0
PARALLEL = 16


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def pctl(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, round(q * (len(s) - 1)))], 2)


def summary(samples: list[float]) -> dict:
    return {"n": len(samples), "p50_ms": pctl(samples, 0.5), "p99_ms": pctl(samples, 0.99),
            "mean_ms": round(statistics.fmean(samples), 2)}


class Plugin:
    def __init__(self, name: str, exe: str, cni_path: str, conf: dict, short: str = "",
                 interpreter: tuple[str, ...] = ()) -> None:
        self.name, self.exe, self.cni_path, self.conf = name, exe, cni_path, json.dumps(conf).encode()
        self.short = short or name[:3]
        self.argv = [*interpreter, exe]

    def call(self, command: str, cid: str, pod: str) -> float:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": str(lab_netns.path(pod)),
               "CNI_IFNAME": "eth0", "CNI_PATH": self.cni_path, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}"}
        t0 = time.perf_counter()
        proc = subprocess.run(self.argv, input=self.conf, env=env, capture_output=True, timeout=60, check=False)
        ms = (time.perf_counter() - t0) * 1000
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} {command} {cid}: rc {proc.returncode}: {proc.stdout!r} {proc.stderr!r}")
        return ms


class Bench:
    def __init__(self, tmp: Path, tag: str, deadline: float) -> None:
        self.tmp, self.tag, self.deadline = tmp, tag, deadline
        self.node = f"{tag}-node"
        self.pods: list[str] = []
        self.agent: subprocess.Popen | None = None
        self._n = 0
        self._lock = threading.Lock()

    def new_pods(self, k: int) -> list[str]:
        out = []
        for _ in range(k):
            with self._lock:
                self._n += 1
                name = f"{self.tag}-p{self._n}"
            sh("ip", "netns", "add", name)
            self.pods.append(name)
            out.append(name)
        return out

    def drop_pods(self, pods: list[str]) -> None:
        for p in pods:
            subprocess.run(["ip", "netns", "del", p], timeout=30, check=False)
            self.pods.remove(p)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("benchmark ran out of time")

    def run_case(self, plugin: Plugin, pods_n: int, rounds: int) -> dict:
        out: dict = {}
        pods = self.new_pods(pods_n)
        ids = [f"{plugin.short}s{i}" for i in range(pods_n)]
        add = [plugin.call("ADD", c, p) for c, p in zip(ids, pods, strict=True)]
        self.check_time()
        dele = [plugin.call("DEL", c, p) for c, p in zip(ids, pods, strict=True)]
        self.drop_pods(pods)
        out["add_seq"], out["del_seq"] = summary(add), summary(dele)
        add_p, del_p, wall_add = [], [], []
        for r in range(rounds):
            self.check_time()
            pods = self.new_pods(PARALLEL)
            ids = [f"{plugin.short}r{r}x{i}" for i in range(PARALLEL)]
            with ThreadPoolExecutor(PARALLEL) as pool:
                t0 = time.perf_counter()
                add_p += list(pool.map(lambda a: plugin.call("ADD", *a), zip(ids, pods, strict=True)))
                wall_add.append((time.perf_counter() - t0) * 1000)
                del_p += list(pool.map(lambda a: plugin.call("DEL", *a), zip(ids, pods, strict=True)))
            self.drop_pods(pods)
        out[f"add_par{PARALLEL}"], out[f"del_par{PARALLEL}"] = summary(add_p), summary(del_p)
        out[f"add_par{PARALLEL}_wall_ms"] = round(statistics.fmean(wall_add), 1)
        return out

    def start_agent(self, socket: Path) -> None:
        log = open(self.tmp / "agent.log", "w")  # noqa: SIM115 - the agent keeps writing to it
        # this process is in the node netns already; the agent inherits it
        self.agent = subprocess.Popen([KUBEWEFT, "agent", "--test-pod-cidr", "10.247.1.0/24", "--socket",
                                       str(socket), "--state-dir", str(socket.parent), "--node-name", "bench",
                                       "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        end = time.monotonic() + 30
        while not socket.exists():
            if self.agent.poll() is not None or time.monotonic() > end:
                raise RuntimeError("agent did not start: " + (self.tmp / "agent.log").read_text())
            time.sleep(0.05)

    def stop_agent(self) -> None:
        if self.agent and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=30, help="sequential ADDs (then DELs) per plugin")
    ap.add_argument("--rounds", type=int, default=2, help=f"rounds of {PARALLEL} parallel ADDs/DELs")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print(json.dumps({"skipped": "needs root (network namespaces)"}))
        return 0
    tag = f"h6ab{os.getpid() % 100000}"
    with tempfile.TemporaryDirectory(prefix="h6a-bench-") as tmpdir, contextlib.ExitStack() as inside:
        tmp = Path(tmpdir)
        t0 = time.monotonic()
        build = freeze.build(tmp / "frozen-build")        # before the clock: not part of the run
        freeze_s = round(time.monotonic() - t0, 1)
        b = Bench(tmp, tag, time.monotonic() + args.timeout)
        try:
            sh("ip", "netns", "add", b.node)
            sh("ip", "-n", b.node, "link", "set", "lo", "up")
            inside.enter_context(lab_netns.entered(b.node))   # the whole process (one thread so far) moves in
            bin_dir, sock = tmp / "bin", tmp / "run" / "agent.sock"
            sh(KUBEWEFT, "install-cni", "--bin-dir", str(bin_dir), "--conf-dir", str(tmp / "net.d"),
               "--socket", str(sock))
            zbin = tmp / "zbin"
            sh(KUBEWEFT, "install-cni", "--standalone", "--bin-dir", str(zbin), "--conf-dir",
               str(tmp / "net.d-zipapp"), "--socket", str(sock))
            fbin = tmp / "fbin"
            sh(KUBEWEFT, "install-cni", "--frozen", str(build), "--bin-dir", str(fbin))
            b.start_agent(sock)
            kw_conf = {"cniVersion": "1.1.0", "name": "kubeweft", "type": "kubeweft", "socket": str(sock),
                       "dataDir": str(sock.parent / "cni" / "data"), "bridge": "kw0"}
            kw = Plugin("kubeweft", str(bin_dir / "kubeweft"), str(bin_dir), kw_conf)
            kwz = Plugin("kubeweft_zipapp", str(zbin / "kubeweft"), str(zbin), kw_conf, short="kwz",
                         interpreter=("/usr/bin/python3", "-I"))
            kwf = Plugin("kubeweft_frozen", str(fbin / "kubeweft"), str(fbin), kw_conf, short="kwf")
            ref = Plugin("reference", f"{REFERENCE_BIN}/bridge", REFERENCE_BIN,
                         {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cni0",
                          "isGateway": True, "ipMasq": False, "hairpinMode": True,
                          "ipam": {"type": "host-local", "subnet": "10.247.2.0/24",
                                   "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp / "host-local")}})
            load_before = os.getloadavg()
            for p in (kw, kwz, kwf, ref):    # warm up: bridge creation, page cache
                (pod,) = b.new_pods(1)
                p.call("ADD", "warm", pod)
                p.call("DEL", "warm", pod)
                b.drop_pods([pod])
            results = {p.name: b.run_case(p, args.pods, args.rounds) for p in (kw, kwz, kwf, ref)}
            load_after = os.getloadavg()
        except BaseException:
            log = tmp / "agent.log"
            if log.exists():
                print("agent log (tail):\n" + log.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            b.stop_agent()
            inside.close()                  # back to where we started before removing anything
            for ns in [*b.pods, b.node]:
                subprocess.run(["ip", "netns", "del", ns], timeout=30, check=False, capture_output=True)
    k, z, f, r = (results[n] for n in ("kubeweft", "kubeweft_zipapp", "kubeweft_frozen", "reference"))

    def ratio(a: dict) -> dict:
        return {f"{case}_p50": round(a[case]["p50_ms"] / r[case]["p50_ms"], 2)
                for case in a if isinstance(a[case], dict)}
    print(json.dumps({"benchmark": "cni_add_del", "loadavg_1m": [load_before[0], load_after[0]],
                      "kubeweft": k, "kubeweft_zipapp": z, "kubeweft_frozen": f, "reference": r,
                      "ratio_kubeweft_to_reference": ratio(k), "ratio_zipapp_to_reference": ratio(z),
                      "ratio_frozen_to_reference": ratio(f), "frozen_build_s": freeze_s,
                      "target_add_p50_ms": TARGET_ADD_P50_MS,
                      "meets_target": k["add_seq"]["p50_ms"] <= TARGET_ADD_P50_MS}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
