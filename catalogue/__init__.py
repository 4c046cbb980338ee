"""The SQL catalogue: what is served and to whom (assets, model and index versions, reindex runs,
API keys). SQLite is the embedded default, PostgreSQL the production store; Alembic migrations
(migrations/) are the only way its schema changes. Used by the jobs and by the service."""
