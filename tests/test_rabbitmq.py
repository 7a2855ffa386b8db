"""Dramatiq's broker on RabbitMQ (``DRAMATIQ_BROKER_URL=amqp://...``): a complete worker, namespaced queues.

The machine's RabbitMQ (127.0.0.1:5672, guest/guest). Each test's namespace is
part of every queue name, and the test deletes its own queues afterwards.
"""

from __future__ import annotations

import base64
import json

import pytest
from conftest import AMQP_URL, settings_env
from image_fixtures import jpeg

from worker.config.settings import Settings
from worker.producer import CallbackProducer

pytestmark = pytest.mark.slow

QUEUES = ("leader", "status", "images")


def test_a_worker_on_rabbitmq_delivers_and_runs_image_tasks(rabbitmq, start_worker, namespace, redis_url, receiver):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.message import Message

    settings = Settings.from_env(settings_env(namespace, redis_url, DRAMATIQ_BROKER_URL=rabbitmq))
    worker = start_worker(threads=4, DRAMATIQ_BROKER_URL=rabbitmq)  # leader and writer each hold a thread
    producer = CallbackProducer(settings)
    ids = producer.enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(200)])
    producer.close()
    assert receiver.wait_for(200, timeout=60), worker.output()[-3000:]
    assert set(receiver.ids()) >= set(ids)

    broker = RabbitmqBroker(url=rabbitmq)
    task = {
        "task_id": "t-amqp",
        "image": base64.b64encode(jpeg((500, 400))).decode(),
        "callback_url": f"{receiver.url}/ok",
    }
    broker.enqueue(
        Message(
            queue_name=f"images.{namespace}",
            actor_name="process_image_edit_task",
            args=(task,),
            kwargs={},
            options={},
        )
    )
    assert receiver.wait_for(201, timeout=60), worker.output()[-3000:]
    payloads = [json.loads(a.body) for a in receiver.snapshot()]
    assert any(p.get("task_id") == "t-amqp" and p.get("status") == "success" for p in payloads)
    broker.close()
    assert "amqp://guest:guest" not in worker.output()  # the broker URL's credentials are never logged


def test_two_namespaces_on_one_rabbitmq_never_share_queues(namespace):
    ours = Settings.from_env({"WORKER_NAMESPACE": namespace, "DRAMATIQ_BROKER_URL": AMQP_URL}, signs=False)
    theirs = Settings.from_env({"WORKER_NAMESPACE": namespace + "x", "DRAMATIQ_BROKER_URL": AMQP_URL}, signs=False)
    from worker.actors.broker import queue_name

    assert {queue_name(ours, q) for q in QUEUES}.isdisjoint({queue_name(theirs, q) for q in QUEUES})
    on_redis = Settings.from_env({"WORKER_NAMESPACE": namespace}, signs=False)
    assert queue_name(on_redis, "images") == "images"  # Redis brokers are namespaced by key prefix
