#!/usr/bin/env python3
# Xyn (remediation)
#
# A Checkmk notification script: copy it to ~/local/share/check_mk/notifications/ on the
# Checkmk site, make it executable, and pick "Xyn (remediation)" as the method of a
# notification rule. It posts the notification context (the NOTIFY_* variables without their
# prefix: HOSTNAME, HOSTADDRESS, SERVICEDESC, SERVICESTATE, SERVICEOUTPUT, custom host
# attributes as HOST_<NAME>, …) as JSON to the node's /hooks/checkmk, authenticated with the
# source's own secret (never an API token).
#
# Settings (environment of the site, or the rule's parameters):
#   XYN_HOOK_URL               e.g. https://xyn.internal:8443/hooks/checkmk
#   XYN_HOOK_CHECKMK_SECRET    the secret [hooks.checkmk] secret_env names on the node
import json
import os
import sys
import urllib.request

context = {k[len("NOTIFY_"):]: v for k, v in os.environ.items() if k.startswith("NOTIFY_")}
# Checkmk passes every value as text; the port is a number for the blueprint's integer input.
if context.get("HOST_SSH_PORT", "").isdigit():
    context["HOST_SSH_PORT"] = int(context["HOST_SSH_PORT"])

request = urllib.request.Request(
    os.environ.get("XYN_HOOK_URL", "http://127.0.0.1:8080/hooks/checkmk"),
    data=json.dumps(context).encode(),
    headers={
        "Content-Type": "application/json",
        "Authorization": "Bearer " + os.environ["XYN_HOOK_CHECKMK_SECRET"],
    },
    method="POST",
)
try:
    with urllib.request.urlopen(request, timeout=10) as answer:
        print(f"xyn: {answer.status} {answer.read().decode()[:200]}")
except urllib.error.HTTPError as e:
    # Checkmk shows this in the notification log; exit 2 means "do not retry".
    print(f"xyn refused the notification: {e.code} {e.read().decode()[:300]}", file=sys.stderr)
    sys.exit(2)
except OSError as e:
    print(f"xyn unreachable: {e}", file=sys.stderr)
    sys.exit(1)
