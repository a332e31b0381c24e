"""Integrations with tools data teams already run: OpenLineage (``integrations.openlineage``) and MLflow
(``integrations.mlflow``). Optional extras (``pip install traceprop-frames[openlineage]`` / ``[mlflow]``);
nothing in the core imports them. They hear the core through :mod:`traceprop_frames.lineage.events`."""
