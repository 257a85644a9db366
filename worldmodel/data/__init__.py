"""Memory Maze data: the environment (env), scripted policies (policies), episode files
(episodes), generation (generate: `worldmodel generate-data`), evaluation trajectories
(trajectories) and training clips (dataset, the only module that imports torch).

Nothing here imports memory_maze / dm_control / mujoco until an environment is built.
"""
