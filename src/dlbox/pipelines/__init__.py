"""Pipelines (issue 14): a commit's code snapshot built, tested, trained, evaluated, gated against the
champion, registered, deployed (a hook, no-op today) and reported, driven by the service's loop."""
