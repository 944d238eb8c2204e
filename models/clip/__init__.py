"""CLIP prompt learning (Sain et al., CVPR 2023) and the small CLIP the pipeline pretrains for it.

``tower``: open_clip architectures as data, CLIP folders, published CLIPs; ``pretrain``: the CLIP loss on a train
split with captions (stage ``pretrain_clip``); ``prompt``: the ``clip_prompt`` method (deep prompts, LayerNorm
tuning); ``losses``: its objectives; ``explain``: its match explanations. One package, so the pipeline can
depend on all of the method's code at once (``dvc.yaml``: ``code: models/clip``).
"""
