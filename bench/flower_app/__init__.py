"""The Flower App that bench/flower_deployment.py submits to a local SuperLink (runs in
.venv-flower, never imported by the project)."""
