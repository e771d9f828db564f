"""One cog per feature area: imagine, expand, jobs, admin, errors."""
