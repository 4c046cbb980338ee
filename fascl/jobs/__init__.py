"""The jobs: what the commands do (build and publish, activate, evaluate, reindex), written once.

Each job takes explicit settings and values, returns a result and raises typed errors
(fascl/jobs/errors.py); the command files under fascl/cli only parse arguments and print."""
