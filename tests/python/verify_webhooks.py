"""Verifies signed POSTs with the Standard Webhooks project's own Python library.

    python verify_webhooks.py SECRET RECEIVED.json

RECEIVED.json is a list of {"id", "timestamp", "signature", "body"} as a receiver got them.
Every one must verify; each must also fail once its body is changed by one byte. Prints the
number verified.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    secret = sys.argv[1]
    with open(sys.argv[2], encoding="utf-8") as f:
        received = json.load(f)
    wh = Webhook(secret)
    for r in received:
        headers = {
            "webhook-id": r["id"],
            "webhook-timestamp": r["timestamp"],
            "webhook-signature": r["signature"],
        }
        payload = wh.verify(r["body"], headers)
        assert isinstance(payload, dict), payload
        try:
            wh.verify(r["body"] + " ", headers)
        except WebhookVerificationError:
            pass
        else:
            raise SystemExit(f"a changed body verified: {r['id']}")
    print(len(received))


if __name__ == "__main__":
    main()
