"""torch code: backbones (timm, open_clip), the method contract and its methods, the training engine,
streaming data, checkpoints, baselines and the model interface."""
