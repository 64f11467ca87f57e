"""emotune gateway: the only public API. OpenAI-compatible ``/v1/models`` and ``/v1/chat/completions`` (SSE
streaming) in front of the inference service (gRPC), with API keys, request limits, 429 + Retry-After when
full, CORS, ``/healthz`` ``/readyz`` and Prometheus ``/metrics``.

Each resource is a package (``models``, ``chat``; later ``files``, ``fine_tuning``) with ``protocol`` (request /
response shapes), ``serving`` (the work) and ``router`` (thin FastAPI routes), as in vLLM's OpenAI server;
``app.create_app`` includes every feature listed in ``app.FEATURE_MODULES``.
"""
