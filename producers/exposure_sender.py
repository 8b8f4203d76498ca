"""The process that sends exposure records to Kafka for :class:`producers.exposures.ExposureLog`.

It reads frames from its standard input: a 4-byte big-endian key length, a
4-byte big-endian value length, the key, the value. A frame whose key length
is ``0xFFFFFFFF`` asks for a flush: it answers ``flushed <sent> <failed>`` on
its standard output once every record before it is delivered (or failed). At
the end of its input it flushes and exits. Kafka settings come from the
environment (``Settings.from_env``), the topic from the first argument.

Run by :class:`~producers.exposures.ExposureLog`, never by hand.
"""

from __future__ import annotations

import logging
import struct
import sys
from typing import BinaryIO

from streamrec.settings import Settings

FLUSH = 0xFFFFFFFF
_HEADER = struct.Struct(">II")
log = logging.getLogger("streamrec.exposures")


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    if data is None or len(data) < n:
        return None
    return data


def main(topic: str) -> int:
    from kafka import KafkaProducer

    settings = Settings.from_env()
    producer = KafkaProducer(
        **{**settings.kafka_config(), "acks": 1, "linger_ms": 20, "client_id": "streamrec-exposures"}
    )
    counts = {"sent": 0, "failed": 0}

    def failed(exc: BaseException) -> None:
        counts["failed"] += 1
        if counts["failed"] in (1, 10, 100) or counts["failed"] % 1000 == 0:
            log.warning("exposure records not sent: %d (%s)", counts["failed"], exc)

    stdin = sys.stdin.buffer
    while True:
        header = _read_exactly(stdin, _HEADER.size)
        if header is None:
            break
        key_length, value_length = _HEADER.unpack(header)
        if key_length == FLUSH:
            producer.flush()
            sys.stdout.write(f"flushed {counts['sent']} {counts['failed']}\n")
            sys.stdout.flush()
            continue
        key = _read_exactly(stdin, key_length)
        value = _read_exactly(stdin, value_length)
        if key is None or value is None:
            break
        try:
            producer.send(topic, key=key, value=value).add_errback(failed)
            counts["sent"] += 1
        except Exception as exc:  # a broken producer: count, go on
            failed(exc)
    producer.flush()
    producer.close()
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a process by ExposureLog
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(sys.argv[1]))
