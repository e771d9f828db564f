"""The database migrations, one folder per database (`sqlite/`, `postgres/`), numbered `NNNN_name.sql`.

They live at the top of the repository and are installed as the package `edalle.migrations`
(`pyproject.toml` maps it here), so `pip install .` and the Docker image apply them as an editable
install does. `edalle.db` and `edalle.jobs.postgres` read them through `importlib.resources`.
"""
