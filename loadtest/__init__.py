"""Load tools around the product (never imported by it): ``notifier bench`` and locust."""
