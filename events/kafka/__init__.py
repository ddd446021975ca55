"""The Kafka log engine (aiokafka): the log in ``log``, its group membership in ``membership``."""

from blackboard.events.kafka.log import MAX_BATCH_BYTES, KafkaLog, KafkaLogReader
from blackboard.events.kafka.membership import KafkaMembership

__all__ = ["MAX_BATCH_BYTES", "KafkaLog", "KafkaLogReader", "KafkaMembership"]
