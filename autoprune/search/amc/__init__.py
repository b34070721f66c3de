"""AMC-style reinforcement-learning search: a gymnasium env + a stable-baselines3 agent."""

from autoprune.search.amc.agent import AMCSearcher
from autoprune.search.amc.env import PruningEnv

__all__ = ["AMCSearcher", "PruningEnv"]
