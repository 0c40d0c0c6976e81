"""Checks docker-compose.yml without a Docker engine: validates it with docker-compose, then
runs each service's command natively with exactly the environment compose would give it
(only /data, /run/secrets and host names remapped to this machine), waits for each health
check command to pass in dependency order, and stops everything with SIGTERM (exit 0).

Usage: /usr/bin/python3 .ci/compose-smoke.py TARGET_DIR   (TARGET_DIR holds the built binaries)
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

import yaml  # python3-yaml, installed with Debian's docker-compose

bin_dir = os.path.abspath(sys.argv[1])
work = tempfile.mkdtemp()
env = dict(os.environ, ADMIN_TOKEN="compose-admin", WALLET_TOKEN="compose-wallet", VERIFIER_TOKEN="compose-verifier")
text = subprocess.run(
    ["docker-compose", "-f", "docker-compose.yml", "config"], check=True, capture_output=True, text=True, env=env
).stdout
spec = yaml.safe_load(text)

# What the issue asks of the file itself, beyond what running it shows.
services = spec["services"]
assert services["userinfo"]["depends_on"]["auth"]["condition"] == "service_healthy", "userinfo must wait for a healthy auth"
for name, svc in services.items():
    assert svc["healthcheck"]["test"][1] == "health-probe", f"{name}: health check is not health-probe"
    # docker-compose 1.x prints short syntax ("auth-data:/data:rw"); newer ones print mappings.
    mounts = [v.split(":")[:2] if isinstance(v, str) else [v.get("source"), v.get("target")] for v in svc.get("volumes", [])]
    assert any(src in spec.get("volumes", {}) and dst == "/data" for src, dst in mounts), f"{name}: /data is not a named volume"
assert "master_key" in spec.get("secrets", {}), "the master key is not a compose secret"
print("ok: userinfo waits for a healthy auth; each service has a named /data volume and a health-probe check")

master_key = os.path.join(work, "master.key")
with open(master_key, "wb") as f:
    f.write(os.urandom(32))

def remap(value, name):
    data = os.path.join(work, name)
    os.makedirs(data, exist_ok=True)
    value = value.replace("/data", data).replace("/run/secrets/master_key", master_key)
    for host in spec["services"]:
        value = value.replace(f"http://{host}:", "http://127.0.0.1:")
    return value.replace("0.0.0.0:", "127.0.0.1:")

order, seen = [], set()
def visit(name):
    if name in seen:
        return
    seen.add(name)
    for dep in (spec["services"][name].get("depends_on") or {}):
        visit(dep)
    order.append(name)
for name in spec["services"]:
    visit(name)

procs = []
metrics_port = 19090
try:
    for name in order:
        svc = spec["services"][name]
        senv = {k: remap(str(v), name) for k, v in (svc.get("environment") or {}).items()}
        if "METRICS_ADDR" in senv:
            senv["METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"
            metrics_port += 1
        cmd = [os.path.join(bin_dir, svc["command"][0])] + svc["command"][1:]
        log = open(os.path.join(work, f"{name}.log"), "w")
        procs.append((name, subprocess.Popen(cmd, env=dict(PATH=os.environ["PATH"], **senv), stdout=log, stderr=log)))
        check = [remap(str(a), name) for a in svc["healthcheck"]["test"][1:]]
        check[0] = os.path.join(bin_dir, check[0])
        for _ in range(100):
            if subprocess.run(check, capture_output=True).returncode == 0:
                print(f"ok: {name} is healthy per its compose health check")
                break
            time.sleep(0.2)
        else:
            print(open(os.path.join(work, f"{name}.log")).read())
            raise SystemExit(f"{name} never became healthy")
finally:
    for name, proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)
    for name, proc in procs:
        code = proc.wait(timeout=20)
        print(f"{name} exited {code} on SIGTERM")
        if code != 0:
            print(open(os.path.join(work, f"{name}.log")).read())
            raise SystemExit(1)
print("compose: docker-compose validated the file; every service ran and became healthy as configured")
