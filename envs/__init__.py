"""Gymnasium environments. Importing this package registers ``efe_ray/ArcPrompt-v0``."""

import gymnasium as gym

from envs.arc_prompt_env import ArcPromptEnv

ENV_ID = "efe_ray/ArcPrompt-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="envs.arc_prompt_env:ArcPromptEnv")

__all__ = ["ArcPromptEnv", "ENV_ID"]
