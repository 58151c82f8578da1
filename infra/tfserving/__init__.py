"""TF Serving's protocol side: the transport client, the names both sides share, the
``models.config`` format, warm-up records and the serving target."""
