"""Reinforcement learning from rewards and preferences: reward models and reward functions (`rewards`), training a
reward model (`reward_training`), the online stages GRPO and RLOO (`online`), our PPO trainer (`ppo`), the reward,
DPO, GRPO/RLOO and PPO arguments (`config`) and the reward and PPO stages' config checks (`checks`).
"""
