"""Our RLHF PPO trainer (TRL 1.x no longer ships one): the trainer loop (`trainer`), rollouts and evaluation
(`rollout`), its mathematics (`core`), checkpoints (`checkpoint`), multi-process launch (`launch`), and the
stage's trainer built from its config with the table a run ends with (`build`).
"""
