"""Gymnasium environments. Importing this package registers ``efe_ray/ArcPrompt-v0``.

Nondeterministic in gymnasium's sense: every step trains the env's learner (envs/arc_prompt_env.py).
"""

import gymnasium as gym

from envs.arc_prompt_env import ArcPromptEnv
from envs.trainee import Trainee, build_trainee

ENV_ID = "efe_ray/ArcPrompt-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="envs.arc_prompt_env:ArcPromptEnv", nondeterministic=True)

__all__ = ["ArcPromptEnv", "ENV_ID", "Trainee", "build_trainee"]
