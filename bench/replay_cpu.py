"""CPU seconds of a server's replay from offset 0 (issue 22), which stay comparable on a loaded
machine where wall-clock figures do not.

  python bench/replay_cpu.py seed STATE.json          # a topic like the replay workload's: 1.05M
                                                      # points as 1,000-point log-batch events
  python bench/replay_cpu.py replay STATE.json [REPS] [VAR=value ...]

`replay` spawns `runledger serve` on that topic with an empty data folder and prints the
server's CPU (user + system, all threads) when the sentinel tag written last is visible, then
the same for a restart with the read model kept (the fixed start-up cost) and the difference.
Seed with the code under test: the log's format may differ between commits. Uses
KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:29092); work files go to /tmp/rcpu."""
import json
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import httpx, orjson
from runledger.server_process import ServerProcess

BOOT = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
API = "/api/2.0/mlflow"
T0 = 1_700_000_000_000
TICK = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK, int(f[11]) / TICK, int(f[12]) / TICK

def seed(topic, state):
    d = Path(f"/tmp/rcpu/seed-{topic}")
    d.parent.mkdir(parents=True, exist_ok=True)
    s = ServerProcess(BOOT, d, topic).start(timeout=120)
    try:
        with httpx.Client(base_url=s.url, timeout=120) as h:
            exp = h.post(API + "/experiments/create", json={"name": f"r-{uuid.uuid4().hex[:8]}"}).json()["experiment_id"]
            run = h.post(API + "/runs/create", json={"experiment_id": exp, "start_time": T0}).json()["run"]["info"]["run_id"]
        keys = {"hist_50k": 50_000, "hist_1m": 1_000_000}
        chunks = [(k, lo, min(1000, n - lo)) for k, n in keys.items() for lo in range(0, n, 1000)]
        def work(w):
            with httpx.Client(base_url=s.url, timeout=120) as h:
                for k, lo, n in chunks[w::8]:
                    body = orjson.dumps({"run_id": run, "metrics": [{"key": k, "value": i * 0.5, "timestamp": T0 + i, "step": i} for i in range(lo, lo + n)]})
                    h.post(API + "/runs/log-batch", content=body, headers={"content-type": "application/json"}).raise_for_status()
        with ThreadPoolExecutor(8) as p:
            list(p.map(work, range(8)))
        with httpx.Client(base_url=s.url, timeout=120) as h:
            h.post(API + "/runs/set-tag", json={"run_id": run, "key": "sentinel", "value": "done"}).raise_for_status()
    finally:
        s.stop()
    shutil.rmtree(d, ignore_errors=True)
    Path(state).write_text(json.dumps({"topic": topic, "run_id": run}))

def visible(url, run):
    try:
        r = httpx.get(url + API + "/runs/get", params={"run_id": run}, timeout=2)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and any(t["key"] == "sentinel" for t in r.json()["run"]["data"].get("tags", []))

def once(topic, run, d, rebuild, env):
    if rebuild:
        shutil.rmtree(d, ignore_errors=True)
    s = ServerProcess(BOOT, d, topic, **env)
    t0 = s.spawn()
    try:
        while not visible(s.url, run):
            if s.proc.poll() is not None:
                raise RuntimeError(s.log_tail())
            time.sleep(0.05)
        return cpu(s.proc.pid), time.monotonic() - t0
    finally:
        s.stop()

if __name__ == "__main__":
    if sys.argv[1] == "seed":
        seed(f"rcpu-{uuid.uuid4().hex[:8]}", sys.argv[2])
    else:
        st = json.loads(Path(sys.argv[2]).read_text())
        reps = int(sys.argv[3]) if len(sys.argv) > 3 else 2
        env = dict(a.split("=", 1) for a in sys.argv[4:])
        d = Path(f"/tmp/rcpu/data-{uuid.uuid4().hex[:6]}")
        for _ in range(reps):
            (c, cu, cs), w = once(st["topic"], st["run_id"], d, True, env)
            (b, bu, bs), bw = once(st["topic"], st["run_id"], d, False, env)
            print(f"rebuild cpu {c:.2f}s (u {cu:.2f} s {cs:.2f}) wall {w:.2f}s | restart cpu {b:.2f}s (u {bu:.2f} s {bs:.2f}) wall {bw:.2f}s | net cpu {c-b:.2f}s  {env}", flush=True)
        shutil.rmtree(d, ignore_errors=True)
