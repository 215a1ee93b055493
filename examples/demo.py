"""The demo's main job: train the example model, register it, alias it, and show how to call it.

Trains a scikit-learn logistic regression on the breast-cancer data set that ships with
scikit-learn (30 numeric features; nothing is downloaded), registers it as ``diagnosis`` with the
``staging`` alias (``production`` takes an approved promotion), and prints a curl command and a
Python snippet for the server that ``make demo`` starts next.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import dockyard
from dockyard.config import load_settings
from dockyard.services.bootstrap import admin_key_path, ensure_admin_key
from dockyard.services.workspace import Workspace

MODEL_NAME = "diagnosis"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    features, labels = load_breast_cancer(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(features, labels, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(train_x, train_y)
    accuracy = float(model.score(test_x, test_y))

    version = dockyard.register_model(
        model,
        MODEL_NAME,
        reference_data=train_x,
        metrics={"accuracy": accuracy},
        description="Logistic regression on the scikit-learn breast-cancer data set",
        alias="staging",
    )
    print(f"registered {version.ref} (accuracy {accuracy:.3f}) as {MODEL_NAME}@staging")

    row = [round(float(value), 4) for value in test_x[0]]
    body = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    )
    key_file = _admin_key_file()
    print(f"\nthe server requires an API key; the admin key (kept in {key_file}, mode 0600) is:")
    print(f"  {key_file.read_text().strip()}")
    url = f"http://{args.host}:{args.port}"
    print("\nOnce the server below says it is running, try:\n")
    print(f"export DOCKYARD_API_KEY=$(cat {key_file})")
    print(f"curl -s {url}/v2/models/{MODEL_NAME}/infer \\")
    print('  -H "Authorization: Bearer $DOCKYARD_API_KEY" -H "Content-Type: application/json" \\')
    print(f"  -d '{body}'\n")
    print(".venv/bin/python - <<'PY'")
    print("import os, dockyard")
    print(f"client = dockyard.Client({url!r}, api_key=os.environ['DOCKYARD_API_KEY'])")
    print(f"print(client.infer({MODEL_NAME!r}, {{'input-0': [{row}]}}))")
    print("PY\n")
    home = load_settings().home
    print(f"The demo's registry is {home}; look at it with\n")
    print(f"DOCKYARD_HOME={home} .venv/bin/dockyard models list\n")


def _admin_key_file() -> Path:
    """The home's first admin key: created now if the home has no admin key yet (the server would
    create the same on its first start)."""
    workspace = Workspace.open(load_settings())
    ensure_admin_key(workspace)
    path = admin_key_path(workspace)
    if not path.is_file():
        raise SystemExit(
            f"this home has admin keys but no {path}: create a key for the demo with "
            "dockyard keys create --name demo --role predictor"
        )
    return path


if __name__ == "__main__":
    main()
