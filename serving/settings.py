"""The service's settings, read from the environment once (defaults here, and nowhere else).

``ZSSBIR_BUNDLE`` (the serving bundle), ``ZSSBIR_API_THREADS`` (decoding and ranking calls at once),
``ZSSBIR_MAX_LATENCY_MS`` (the batching latency budget: a request that BentoML's dispatcher predicts, or that the
/search batcher finds, waiting longer is refused with a 429; 50 ms kept CPU batches at ~4 requests and refused most
of a 32-client load, 2 s still refused a few 8-image requests, benchmarks/results/serving_http.md), the upload
limits ``ZSSBIR_MAX_BYTES``, ``ZSSBIR_MAX_PIXELS``, ``ZSSBIR_MAX_SIDE``, ``ZSSBIR_MAX_K``, and ``ZSSBIR_TORCH_THREADS``
(torch's threads for each batcher's one batch at a time; default half the cores).
"""

from __future__ import annotations

import os
from pathlib import Path

from serving.uploads import UploadLimits

BUNDLE = Path(os.environ.get("ZSSBIR_BUNDLE", "artifacts/serving/bundle"))
API_THREADS = int(os.environ.get("ZSSBIR_API_THREADS", "2"))
MAX_LATENCY_MS = int(os.environ.get("ZSSBIR_MAX_LATENCY_MS", "5000"))
# half the cores: the rest decode, normalise ink and run BentoML; on 2 cores one thread cut one client's /search p50
# from 11.5 to 8.1 ms at the same throughput (benchmarks/results/serving_threads.md)
TORCH_THREADS = int(os.environ.get("ZSSBIR_TORCH_THREADS", max(1, (os.cpu_count() or 1) // 2)))


def upload_limits() -> UploadLimits:
    defaults = UploadLimits()
    return UploadLimits(**{name: int(os.environ.get(f"ZSSBIR_{name.upper()}", value))
                           for name, value in defaults.to_dict().items()})
