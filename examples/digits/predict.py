"""A short TF Serving REST client for the digits deployment (stdlib only).

    python predict.py http://127.0.0.1:PORT [digits]

Sends one 8x8 image (64 pixel values, 0..16, as scikit-learn's digits) in TF Serving's row form and
prints the most likely digit for each row. Any TensorFlow Serving REST client works the same way.
"""

import json
import sys
import urllib.request

# a "0" from scikit-learn's digits data (load_digits().data[0])
ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
        0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]


def predict(url: str, model: str, rows: list[list[float]]) -> list[list[float]]:
    body = json.dumps({"instances": rows}).encode()
    request = urllib.request.Request(f"{url}/v1/models/{model}:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)["predictions"]


if __name__ == "__main__":
    url = sys.argv[1].rstrip("/")
    model = sys.argv[2] if len(sys.argv) > 2 else "digits"
    for probabilities in predict(url, model, [ZERO]):
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        print(f"digit {best} (p={probabilities[best]:.3f})")
