from aibatch.cli import app

app()
