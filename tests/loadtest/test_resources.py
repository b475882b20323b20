"""Which service processes a bench counts: the broker's and the store's, by their ports."""

from __future__ import annotations

from loadtest.resources import service_ports


def test_the_store_is_counted_by_its_kind_and_port() -> None:
    amqp = "amqp://guest:guest@127.0.0.1:5673/vhost"
    assert service_ports(amqp, "postgresql://u:p@127.0.0.1:5433/db") == {
        "rabbitmq": 5673,
        "postgresql": 5433,
    }
    assert service_ports(amqp, "mongodb://127.0.0.1:27150/notifier") == {
        "rabbitmq": 5673,
        "mongodb": 27150,
    }


def test_default_ports_and_the_first_of_several_hosts() -> None:
    assert service_ports("amqp://127.0.0.1/", "mongodb://u:p@a:27018,b:27019/db?rs=x") == {
        "rabbitmq": 5672,
        "mongodb": 27018,
    }
    assert service_ports("amqp://h", "postgresql:///notifier") == {
        "rabbitmq": 5672,
        "postgresql": 5432,
    }
