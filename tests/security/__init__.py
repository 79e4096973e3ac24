"""The security suite of issue 12 (threat lines T1-T4); helpers in :mod:`.sectools`."""
