"""Our RLHF PPO trainer (TRL 1.x no longer ships one): the trainer loop (`trainer`), rollouts and evaluation
(`rollout`), its mathematics (`core`), checkpoints (`checkpoint`) and multi-process launch (`launch`).
"""
