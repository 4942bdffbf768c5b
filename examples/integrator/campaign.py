#!/usr/bin/env python3
"""A whole upgrade campaign against a running fota engine, through its HTTP API only.

What an integrator's back office does: upload two firmware versions of a module model, have the
engine make a delta package (with the model's differ plugin), put every device of the model in
a group (reading the version one of them reports from the device itself), run an upgrade task,
follow it to the end and read the statistics.

With --webhook-listen HOST:PORT it follows the task through webhooks instead of polling: it
receives the engine's deliveries on that address (the engine must reach it), checks each one's
signature, drops repeats by event id, and waits for the task's events.

Standard library only. Usage:

    FOTA_API=http://127.0.0.1:8080 FOTA_TOKEN=... \\
        python3 examples/integrator/campaign.py --vendor Acme --model NB-IoT-A \\
        --old old.bin --old-version 0.8.0 --new new.bin --new-version 0.9.0 \\
        [--webhook-listen 127.0.0.1:9090]

Exits 0 when the task completed and every device in it was upgraded.
"""

import argparse
import hashlib
import hmac
import http.server
import json
import os
import queue
import secrets
import sys
import threading
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
    """Every item of a paged list, following each page's cursor to the next."""
    items, cursor = [], None
    while True:
        page_query = dict(query, limit=1000)
        if cursor:
            page_query["cursor"] = cursor
        page = call("GET", path, query=page_query)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
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


def verified(secret, header, body, tolerance=300):
    """True when a Fota-Signature header signs this body with the secret, recently."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        sent = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return abs(time.time() - sent) <= tolerance and hmac.compare_digest(expected, fields.get("v1", ""))


class Webhooks:
    """Receives the engine's webhook deliveries on an address: answers 401 to a delivery whose
    signature does not verify (the engine tries it again), 204 to the others, and queues each
    event once (deliveries are at least once: a repeat has the same id). One request at a time,
    so events queue in the order they come, which is the order they happened."""

    def __init__(self, listen):
        host, port = listen.rsplit(":", 1)
        self.secret = secrets.token_hex(32)
        self.events = queue.Queue()
        self.seen = set()
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = min(int(self.headers.get("Content-Length", 0)), 1 << 20)
                body = self.rfile.read(length)
                signature = self.headers.get("Fota-Signature", "")
                if not verified(hooks.secret.encode(), signature, body):
                    self.send_response(401)
                    self.end_headers()
                    return
                event = json.loads(body)
                if event["id"] not in hooks.seen:
                    hooks.seen.add(event["id"])
                    hooks.events.put(event)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer((host, int(port)), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        address, bound = self.server.server_address[:2]
        self.subscription = call("POST", "/v1/webhooks", {
            "url": f"http://{address}:{bound}/fota",
            "secret": self.secret,
            "kinds": ["task", "device_failed", "failure_rate_alarm", "cell_paused"],
            "description": "examples/integrator/campaign.py",
        })
        print(f"webhook {self.subscription['id']}: events to {self.subscription['url']}")

    def follow(self, task_id, deadline):
        """The task's events until it is completed or stopped; returns its last status."""
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(left, 0.1))
            except queue.Empty:
                return None
            data = event["data"]
            if data.get("task_id", data.get("id")) != task_id:
                continue
            if event["kind"] == "task":
                print(f"  event {event['id']}: task {data['status']}")
                if data["status"] in ("completed", "stopped"):
                    return data
            elif event["kind"] == "device_failed":
                print(f"  event {event['id']}: {data['endpoint']} {data['result']}: {data['note']}")
            else:
                print(f"  event {event['id']}: {event['kind']} {data}")

    def close(self):
        call("DELETE", f"/v1/webhooks/{self.subscription['id']}")
        self.server.shutdown()


def poll(task, deadline, timeout):
    """Reads the task until it is completed or stopped; returns it."""
    while task["status"] not in ("completed", "stopped"):
        if time.monotonic() > deadline:
            sys.exit(f"task {task['id']} still {task['status']} after {timeout} s")
        time.sleep(1)
        task = call("GET", f"/v1/tasks/{task['id']}")
        rows = all_items(f"/v1/tasks/{task['id']}/devices", {})
        upgraded = sum(1 for row in rows if row.get("result") == "successful")
        print(f"  {task['status']}: {upgraded}/{len(rows)} upgraded")
    return task


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for option in ("vendor", "model", "old", "old-version", "new", "new-version"):
        parser.add_argument("--" + option, required=True)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the task")
    parser.add_argument("--format", choices=("raw", "signed", "packager"),
                        help="how the package is framed (default: the model's format, raw "
                             "unless bound); fota sim's devices verify the signed container")
    parser.add_argument("--webhook-listen", metavar="HOST:PORT",
                        help="follow the task through webhooks received here (port 0: any)")
    args = parser.parse_args()
    hooks = Webhooks(args.webhook_listen) if args.webhook_listen else None

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
    if hooks:
        task = hooks.follow(task["id"], deadline) or sys.exit(
            f"task {task['id']}: no final status by webhook after {args.timeout} s")
        hooks.close()
    else:
        task = poll(task, deadline, args.timeout)

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
