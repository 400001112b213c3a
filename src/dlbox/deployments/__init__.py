"""Deployments: a served model as recorded intent (the store) reconciled against the engine.

`intent` is pure (the flags checked; what to do given the engine's facts); `manage` records, starts,
lists, removes and reconciles, through the registry (models/) and the serving engine (serving/).
"""
