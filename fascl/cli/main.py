"""`fascl`: the one command line in front of every job (data, train, evaluate, index, serve, db, reindex, retrain, schedule)."""

from __future__ import annotations

import typer

from fascl.cli import data, db, evaluate, index, reindex, retrain, schedule, serve, train

app = typer.Typer(
    help="FASCL asset retrieval: import bars, train embeddings, index them, serve similar-asset queries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.command("train")(train.train)
app.add_typer(index.app, name="index")
app.command("evaluate")(evaluate.evaluate)
app.add_typer(db.app, name="db")
app.add_typer(db.keys_app, name="keys")
app.command("serve")(serve.serve)
app.command("reindex")(reindex.reindex)
app.command("retrain")(retrain.retrain)
app.command("schedule")(schedule.schedule)


if __name__ == "__main__":
    app()
