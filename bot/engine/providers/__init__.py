"""Local implementations of CodePipeline action providers for the embedded engine.

``git`` backs the CodeCommit and CodeStarSourceConnection source actions, ``commands`` the
Compute/AWS/Commands action. They are database-free building blocks: the engine's worker decides
when to call them and records what they return.
"""
