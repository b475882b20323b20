"""Push providers: FCM HTTP v1 and APNs over HTTP/2, behind one small protocol."""
