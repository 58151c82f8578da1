"""Streaming inference: score requests from a stream through TF Serving (``scorer``), the
requests' and results' formats (``requests``), the metrics (``metrics``) and the scorer's
/metrics, /healthz, /readyz endpoint (``http``)."""
