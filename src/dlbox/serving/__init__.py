"""Model serving: a deployment is one container running dlbox_serving.py (TF Serving's REST and gRPC
APIs) in the model's own training image. `plan` is pure; `deploy` makes, moves and removes.

`dlbox.serving.plan` is the function; import from the module by name (`from dlbox.serving.plan import ...`)."""

from dlbox.serving.deploy import Deployment, move_labels, remove, up
from dlbox.serving.plan import plan

__all__ = ["Deployment", "move_labels", "plan", "remove", "up"]
