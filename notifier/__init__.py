"""notifier: a push-notification delivery pipeline (API, RabbitMQ, workers, FCM and APNs)."""

__version__ = "0.1.0"
