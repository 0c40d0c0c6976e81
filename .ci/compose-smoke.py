"""Checks docker-compose.yml, alone and with docker-compose.tls.yml, without a Docker engine:
validates each with docker-compose, then runs each service's command natively with exactly
the environment compose would give it (only /data, /run/secrets and host names remapped to
this machine), waits for each health check command (run with the service's environment, as
in a container) to pass in dependency order, and stops everything with SIGTERM (exit 0).
The TLS variant runs with a CA and a server certificate made here with openssl.

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
# Role tokens as long as the services require (32+ characters), each its own.
env = dict(os.environ, ADMIN_TOKEN=os.urandom(32).hex(), WALLET_TOKEN=os.urandom(32).hex(), VERIFIER_TOKEN=os.urandom(32).hex())
env.pop("PUBLISH_ADDR", None)


def compose_config(files):
    args = ["docker-compose"] + [a for f in files for a in ("-f", f)] + ["config"]
    return yaml.safe_load(subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout)


def published_host(port):
    # docker-compose 1.x prints "127.0.0.1:50051:50051/tcp"; newer ones print mappings.
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).split(":")
    return parts[0] if len(parts) == 3 else None


def check_file(spec, label):
    """What the issues ask of the file itself, beyond what running it shows."""
    services = spec["services"]
    assert services["userinfo"]["depends_on"]["auth"]["condition"] == "service_healthy", "userinfo must wait for a healthy auth"
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][1] == "health-probe", f"{name}: health check is not health-probe"
        mounts = [v.split(":")[:2] if isinstance(v, str) else [v.get("source"), v.get("target")] for v in svc.get("volumes", [])]
        assert any(src in spec.get("volumes", {}) and dst == "/data" for src, dst in mounts), f"{name}: /data is not a named volume"
        for port in svc.get("ports", []):
            assert published_host(port) == "127.0.0.1", f"{name}: port {port} is published beyond loopback by default"
    assert "master_key" in spec.get("secrets", {}), "the master key is not a compose secret"
    print(f"ok ({label}): userinfo waits for a healthy auth; each service has a named /data volume, "
          "a health-probe check and its ports published on 127.0.0.1 only")


def run_natively(spec, secret_files, label):
    def remap(value, name):
        data = os.path.join(work, label, name)
        os.makedirs(data, exist_ok=True)
        value = value.replace("/data", data)
        for secret, path in secret_files.items():
            value = value.replace(f"/run/secrets/{secret}", path)
        for host in spec["services"]:
            for scheme in ("http", "https"):
                value = value.replace(f"{scheme}://{host}:", f"{scheme}://127.0.0.1:")
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
    logs = {}
    try:
        for name in order:
            svc = spec["services"][name]
            senv = {k: remap(str(v), name) for k, v in (svc.get("environment") or {}).items()}
            if "METRICS_ADDR" in senv:
                senv["METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"
                metrics_port += 1
            senv = dict(PATH=os.environ["PATH"], **senv)
            cmd = [os.path.join(bin_dir, svc["command"][0])] + svc["command"][1:]
            logs[name] = os.path.join(work, f"{label}-{name}.log")
            log = open(logs[name], "w")
            procs.append((name, subprocess.Popen(cmd, env=senv, stdout=log, stderr=log)))
            check = [remap(str(a), name) for a in svc["healthcheck"]["test"][1:]]
            check[0] = os.path.join(bin_dir, check[0])
            for _ in range(100):
                if subprocess.run(check, capture_output=True, env=senv).returncode == 0:
                    print(f"ok ({label}): {name} is healthy per its compose health check")
                    break
                time.sleep(0.2)
            else:
                print(open(logs[name]).read())
                raise SystemExit(f"{label}: {name} never became healthy")
    finally:
        for name, proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs:
            code = proc.wait(timeout=20)
            print(f"{label}: {name} exited {code} on SIGTERM")
            if code != 0:
                print(open(logs[name]).read())
                raise SystemExit(1)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=work)


master_key = os.path.join(work, "master.key")
with open(master_key, "wb") as f:
    f.write(os.urandom(32))

plain = compose_config(["docker-compose.yml"])
check_file(plain, "plaintext")
run_natively(plain, {"master_key": master_key}, "plaintext")

# The TLS variant, with a CA and a certificate it signed for the compose service names,
# localhost (what health-probe checks) and 127.0.0.1 (where this script runs them).
tls = compose_config(["docker-compose.yml", "docker-compose.tls.yml"])
check_file(tls, "tls")
for name, svc in tls["services"].items():
    for variable in ("TLS_CERT_FILE", "TLS_KEY_FILE", "PROBE_TLS_CA_FILE"):
        assert variable in svc["environment"], f"tls: {name} lacks {variable}"
assert tls["services"]["userinfo"]["environment"]["AUTH_URL"].startswith("https://"), "tls: AUTH_URL is not https"
ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=compose-smoke CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=miniprogram")
with open(os.path.join(work, "tls.ext"), "w") as f:
    f.write("subjectAltName=DNS:auth,DNS:userinfo,DNS:localhost,IP:127.0.0.1\n"
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "tls.pem", "-days", "2", "-extfile", "tls.ext")
run_natively(tls, {
    "master_key": master_key,
    "tls_cert": os.path.join(work, "tls.pem"),
    "tls_key": os.path.join(work, "tls.key"),
    "tls_ca": os.path.join(work, "ca.pem"),
}, "tls")
print("compose: docker-compose validated both files; every service ran and became healthy as configured, "
      "in plaintext and with TLS")
