"""Reinforcement learning from rewards and preferences: reward models and reward functions (`rewards`), the online
stages GRPO and RLOO (`online`), our PPO trainer (`ppo`), and the reward, DPO, GRPO/RLOO and PPO arguments
(`config`).
"""
