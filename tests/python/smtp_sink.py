"""A real SMTP server for the notification tests: aiosmtpd on loopback, writing each message it
accepts as one JSON line (envelope, headers, and the decoded text and HTML parts, taken apart by
Python's own email parser) to a file.

    python smtp_sink.py PORT OUT.jsonl [--refuse N] [--hang]

--refuse N  answers the first N messages with 451 (a transient failure: the sender retries);
--hang      accepts the connection and never answers DATA (a server that hangs);
--count     writes one byte per message instead of its record (for benchmarks: the file's
            size is the number of messages accepted).

Prints "ready" once it listens, then serves until killed.
"""

import asyncio
import email
import email.policy
import json
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out, refuse, hang, count):
        self.out = out
        self.refuse = refuse
        self.hang = hang
        self.count = open(out, "ab", buffering=0) if count else None

    async def handle_DATA(self, server, session, envelope):
        if self.hang:
            await asyncio.sleep(3600)
        if self.count is not None:
            self.count.write(b".")
            return "250 OK"
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "message_id": str(msg["Message-ID"]),
            "content_type": msg.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def main():
    port = int(sys.argv[1])
    out = sys.argv[2]
    refuse = 0
    hang = "--hang" in sys.argv
    count = "--count" in sys.argv
    if "--refuse" in sys.argv:
        refuse = int(sys.argv[sys.argv.index("--refuse") + 1])
    controller = Controller(Sink(out, refuse, hang, count), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
