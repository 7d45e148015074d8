"""Where a plan's stages run: the Ray Data pipeline (`pipeline`) or this process (`inline`), behind one door
(`execute`); the Ray cluster (`cluster`) and the actor pool sized to it (`pool`); progress and the stall
watchdog (`progress`); and the servers a run needs, checked before it starts (`endpoints`).

Layer: above `plan`; it may import every layer below it, never `commands`, `tools` or `cli`. Ray is imported
only by `cluster`, `pipeline` and `progress`.
"""
