from aibatch.app.cli import app

app()
