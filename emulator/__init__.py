"""Local FCM and APNs stand-ins for tests and load tests; never imported by the product."""
