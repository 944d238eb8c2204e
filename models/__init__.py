"""torch code: backbones (timm, open_clip), the retrieval methods, losses, checkpoints, baselines."""

import sbir  # noqa: F401  (applies the offline/no-telemetry defaults before timm or open_clip load)
