"""The broker of the embedded default: Celery messages as files, shared by processes."""

from __future__ import annotations

from kombu import Connection, Queue

QUEUE = Queue("work", routing_key="work")


def connect(root) -> Connection:
    return Connection("filesystem://", transport="mirrorsite.broker:Transport", transport_options={"root": str(root)})


def test_messages_go_from_one_connection_to_another_in_order_and_once(tmp_path):
    with connect(tmp_path) as producer:
        queue = producer.SimpleQueue(QUEUE)
        for n in range(3):
            queue.put({"n": n})
        queue.close()
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "queue").iterdir()) == ["work.msg"] * 3
    assert list((tmp_path / "staging").iterdir()) == []
    received = []
    with connect(tmp_path) as first, connect(tmp_path) as second:
        for consumer in (first, second, first):
            queue = consumer.SimpleQueue(QUEUE)
            message = queue.get(timeout=2)
            received.append(message.payload["n"])
            message.ack()
            queue.close()
        assert second.SimpleQueue(QUEUE).qsize() == 0
    assert received == [0, 1, 2]
    assert list((tmp_path / "claimed").iterdir()) == []


def test_a_message_still_being_written_is_not_taken(tmp_path):
    with connect(tmp_path) as connection:
        queue = connection.SimpleQueue(QUEUE)
        (tmp_path / "staging" / "00000000000000000001_x.work.msg").write_bytes(b'{"body": "half')
        assert queue.qsize() == 0
        queue.put({"whole": True})
        assert queue.get(timeout=2).payload == {"whole": True}
        queue.close()
