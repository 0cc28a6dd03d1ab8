#!/usr/bin/env python3
"""Checks the JSON lines of a `scripts/bench` run: every expected run is there, every connection
was made and none failed or was dropped, messages arrived, and the server's CPU and memory were
sampled (an idle run needs no messages). tickstream's own runs must also have no gaps, and a
compressed run (deflate-*) a third of its plain run's bytes per update at most. Timing is not judged: speed is for the
benchmark, not for CI.

    scripts/bench-check.py RESULTS.jsonl LABEL [LABEL ...]
"""
import json
import sys

path, want = sys.argv[1], sys.argv[2:]
runs = {}
with open(path) as f:
    for n, line in enumerate(f, 1):
        try:
            run = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"{path}:{n}: not a JSON line: {e}")
        runs[run.get("label")] = run

problems = [f"{label}: no result line" for label in want if label not in runs]
for label in want:
    run = runs.get(label)
    if run is None:
        continue
    if run.get("scenario") == "storm":
        if run["served"] != run["connections"] or run["failed"] != 0:
            problems.append(f"{label}: not every client was served ({json.dumps(run)})")
        print(f"{label}: {run['served']} served in {run['all_served_s']} s")
        continue
    if label.startswith("broker-"):
        # The broker's own figures: memory per stream, and events one ingest task publishes.
        figure = run.get("bytes_per_stream", run.get("events_per_s", 0))
        if not figure > 0:
            problems.append(f"{label}: no figure ({json.dumps(run)})")
        print(f"{label}: {figure}")
        continue
    server = run.get("server", {})
    checks = {
        "every connection made": run["connected"] == run["connections"],
        "none failed": run["failed"] == 0,
        "none dropped": run["dropped"] == 0,
        "messages received": run["messages"] > 0 or label.endswith("idle"),
        "server CPU sampled": "cpu_system_s_per_million_msgs" in server,
        "server RSS sampled": server.get("rss_connected_kib", 0) > 0,
    }
    if not label.startswith(("node-ws-", "fastapi-", "floor")):
        checks["no gaps"] = run["gaps"] == 0
    # A compressed run must carry its updates in well under a third of the plain run's bytes.
    plain = runs.get("plain-" + label.split("-", 2)[-1])
    if label.startswith("deflate-") and plain and run["messages"] and plain["messages"]:
        per = run["bytes_per_s"] / run["msgs_per_s"]
        checks[f"compressed ({per:.1f} bytes per update)"] = (
            per * 3 < plain["bytes_per_s"] / plain["msgs_per_s"])
    problems += [f"{label}: {what} ({json.dumps(run)})" for what, ok in checks.items() if not ok]
    print(f"{label}: {run['connected']} connected, {run['msgs_per_s']:.0f} msgs/s, "
          f"{server.get('cpu_s_per_million_msgs')} CPU-s/M, gaps {run['gaps']}")

if problems:
    sys.exit("benchmark check failed:\n  " + "\n  ".join(problems))
print(f"benchmark check: {len(want)} runs as expected")
