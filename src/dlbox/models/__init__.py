"""The model registry: a run's SavedModel kept as a numbered, immutable, content-addressed version
with its lineage (run, image, lock, commit, metrics), its signature, and aliases that move.

refs.py parses references (pure), files.py keeps the files, signature.py reads and checks a
SavedModel's signatures (in the run's own image), registry.py is what the routes and serving call.
"""
