#!/usr/bin/env python3
"""A whole upgrade campaign against a running fota engine, through its HTTP API only.

What an integrator's back office does: upload two firmware versions of a module model, have the
engine make a delta package (with the model's differ plugin), put every device of the model in
a group (reading the version one of them reports from the device itself), run an upgrade task,
follow it to the end and read the statistics.

Standard library only. Usage:

    FOTA_API=http://127.0.0.1:8080 FOTA_TOKEN=... \\
        python3 examples/integrator/campaign.py --vendor Acme --model NB-IoT-A \\
        --old old.bin --old-version 0.8.0 --new new.bin --new-version 0.9.0

Exits 0 when the task completed and every device in it was upgraded.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

API = os.environ.get("FOTA_API", "http://127.0.0.1:8080").rstrip("/")
TOKEN = os.environ.get("FOTA_TOKEN", "")


def call(method, path, body=None, query=None, raw=None):
    """One API request; returns the decoded JSON answer (None for 204)."""
    url = API + path
    if query:
        url += "?" + urllib.parse.urlencode(query, doseq=True)
    headers = {"Authorization": "Bearer " + TOKEN}
    data = None
    if raw is not None:
        data, headers["Content-Type"] = raw, "application/octet-stream"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            text = answer.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        problem = error.read().decode(errors="replace")
        sys.exit(f"{method} {path}: {error.code} {problem}")


def all_items(path, query):
    """Every item of a paged list."""
    items = []
    while True:
        page = call("GET", path, query=dict(query, limit=1000, offset=len(items)))
        items += page["items"]
        if not page["items"] or len(items) >= page["total"]:
            return items


def upload(vendor, model, version, path):
    with open(path, "rb") as image:
        query = {"vendor": vendor, "model": model, "version": version}
        firmware = call("POST", "/v1/firmware", query=query, raw=image.read())
    print(f"firmware {version}: {firmware['id']} ({firmware['size']} bytes)")
    return firmware


def reported_version(endpoint):
    """One device read: the firmware version (/3/0/3) the device reports, waiting up to a
    minute for a device asleep in PSM to wake."""
    device = urllib.parse.quote(endpoint, safe=":")
    data = call("GET", f"/v1/devices/{device}/data", query={"path": "/3/0/3", "timeout": 60})
    return data["value"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for option in ("vendor", "model", "old", "old-version", "new", "new-version"):
        parser.add_argument("--" + option, required=True)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the task")
    parser.add_argument("--format", choices=("raw", "signed", "packager"),
                        help="how the package is framed (default: the model's format, raw "
                             "unless bound); fota sim's devices verify the signed container")
    args = parser.parse_args()

    old = upload(args.vendor, args.model, args.old_version, args.old)
    new = upload(args.vendor, args.model, args.new_version, args.new)
    wanted = {"kind": "delta", "from_firmware": old["id"], "to_firmware": new["id"]}
    if args.format:
        wanted["format"] = args.format
    package = call("POST", "/v1/packages", wanted)
    print(f"delta package {package['id']}: {package['size']} bytes")

    group = call("POST", "/v1/groups",
                 {"name": f"{args.model} fleet", "vendor": args.vendor, "model": args.model})
    devices = all_items("/v1/devices", {"vendor": args.vendor, "model": args.model})
    endpoints = [device["endpoint"] for device in devices]
    call("POST", f"/v1/groups/{group['id']}/devices", {"endpoints": endpoints})
    print(f"group {group['id']}: {len(endpoints)} devices")
    if endpoints:
        print(f"{endpoints[0]} reports version {reported_version(endpoints[0])}")

    task = call("POST", "/v1/tasks", {
        "name": f"{args.model} {args.old_version} to {args.new_version}",
        "group_id": group["id"],
        "package_id": package["id"],
        "retries": 3,
        "retry_interval_secs": 5,
        "execution_time": None,
        "deadline": None,
        "pacing": {"max_concurrent": 200, "max_per_cell": 50},
        "min_signal_dbm": None,
        "max_failure_rate": 0.5,
        "failure_sample": 20,
    })
    print(f"task {task['id']} created")

    deadline = time.monotonic() + args.timeout
    while task["status"] not in ("completed", "stopped"):
        if time.monotonic() > deadline:
            sys.exit(f"task {task['id']} still {task['status']} after {args.timeout} s")
        time.sleep(1)
        task = call("GET", f"/v1/tasks/{task['id']}")
        rows = all_items(f"/v1/tasks/{task['id']}/devices", {})
        upgraded = sum(1 for row in rows if row.get("result") == "successful")
        print(f"  {task['status']}: {upgraded}/{len(rows)} upgraded")

    rows = all_items(f"/v1/tasks/{task['id']}/devices", {})
    failed = [row for row in rows if row.get("result") != "successful"]
    for row in failed:
        print(f"  not upgraded: {row['endpoint']} {row.get('result')} {row.get('note')}")
    stats = call("GET", "/v1/stats")
    for model in stats["models"]:
        print(f"{model['vendor']} {model['model']}: {model['successes']}/{model['devices']} "
              f"upgraded, {model['bytes_first']} package bytes sent, "
              f"{model['bytes_resent']} sent again")
    if task["status"] != "completed" or failed:
        sys.exit(f"task {task['status']}, {len(failed)} devices not upgraded")
    print(f"task {task['id']} completed: every device upgraded")


if __name__ == "__main__":
    main()
