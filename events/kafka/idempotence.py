"""The idempotent producer where the broker supports it (``BLACKBOARD_KAFKA_IDEMPOTENCE``).

An idempotent producer gets a producer id from the broker (InitProducerId) and numbers its batches
per partition, so a batch the producer retries after a lost acknowledgement is written once. Without
it a retried batch can be written twice; the copies carry the same event ids and every fold skips the
second (see docs/guarantees.md).

Note: tansu, the test broker, answers aiokafka's InitProducerId with an error, so ``auto`` falls back
to the plain producer there, and ``on`` refuses to start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from blackboard.events.log import LogError

log = structlog.get_logger(__name__)

Idempotence = Literal["auto", "on", "off"]
SETTING = "BLACKBOARD_KAFKA_IDEMPOTENCE"
#: Longest wait for the broker's producer id; past it the broker counts as unavailable (retried at start).
PRODUCER_ID_SECONDS = 15.0


#: The brokers (bootstrap addresses) that refused this process a producer id: ``auto`` does not ask them again.
#: Note: a refused idempotent start can leave one of aiokafka's connections behind (its sender may still be
#: opening one while ``stop`` closes the others), so it is tried once per broker per process, not at every start.
_REFUSED: set[str] = set()


class IdempotenceRefused(LogError):
    """The setting asks for the idempotent producer and the broker refused to give it a producer id."""


async def start_producer(make: Callable[[bool], AIOKafkaProducer], mode: Idempotence, *,
                         where: str) -> tuple[AIOKafkaProducer, bool]:
    """Start ``make(idempotent)`` as ``mode`` asks; return the producer and whether it is idempotent.

    ``auto`` tries the idempotent producer and falls back to the plain one, with one warning line,
    when the broker refuses InitProducerId (and, in this process, goes straight to the plain one for that broker
    from then on); ``on`` raises ``IdempotenceRefused`` instead. A broker that
    cannot be reached raises the client's error in every mode, for the caller to report.
    """
    if mode == "off":
        return await _started(make(False)), False
    if mode == "on" or where not in _REFUSED:
        producer = make(True)
        try:
            await asyncio.wait_for(producer.start(), PRODUCER_ID_SECONDS)
            return producer, True
        except (KafkaConnectionError, TimeoutError):
            await producer.stop()
            raise
        except KafkaError as exc:
            await producer.stop()
            _REFUSED.add(where)
            if mode == "on":
                raise IdempotenceRefused(
                    f"the Kafka broker at {where} refused the idempotent producer (InitProducerId: {exc!r}); "
                    f"set {SETTING}=auto or off to run without it") from exc
    log.warning("kafka_idempotence_off", broker=where, setting=SETTING,
                reason="the broker refused InitProducerId; producer retries may duplicate a batch")
    return await _started(make(False)), False


async def _started(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a start that failed half-way holds connections
        raise
    return producer
