"""Adapters from the functional environment to other RL interfaces.

`pgjax.wrappers.pettingzoo`: `parallel_env` (a PettingZoo `ParallelEnv`, the door for
RLlib / Stable-Baselines3 users) and `vector_env` (N environments stepped by one jitted,
vmapped call).
"""
