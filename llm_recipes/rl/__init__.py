"""Reinforcement learning from rewards and preferences: reward models and reward functions (`rewards`), training a
reward model (`reward_training`), the online stages GRPO and RLOO (`online`), the offline stages' shared policy and
reference and DPO's trainer (`offline`), KTO's trainer (`kto`), our PPO trainer (`ppo`), the reward, DPO, KTO,
GRPO/RLOO and PPO arguments (`config`) and the reward and PPO stages' config checks (`checks`).
"""
