"""An async pet clinic on Aurora DSQL: the models, the walkthrough (``uv run pet-clinic``)."""
